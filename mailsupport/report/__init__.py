"""`mailsupport report`: statistics of requests over a time range.

The package's face is pure: it works on plain data, `TicketFacts` rows, the range and `now`.
`build_report` (figures) turns them into one JSON-ready dict, and `render_text` (text) and
`render_html` (page) only lay that dict out, so the terminal, `--json` and `--html` always
show the same figures. The facts come from the database through `mailsupport.report.database`,
the one module here that reads it: it is imported by name, not from this face, so that
rendering a report loads no database code.

Modules: facts (ticket facts, the range), figures (`build_report`), topics (`find_topics`),
text and page (the renderings), database (`load_tickets`, `load_words`, `read_tickets`),
topicsworker (`find_topics` in a second process while the command reads the rest).

Definitions (the contract of the figures):

- The range is [since, until): `since` included, `until` excluded, both UTC. Days are UTC
  calendar days; weeks are ISO weeks (Monday first) in UTC.
- "Tickets of the range" are the tickets created in it. Merged tickets are left out (they
  live on in the ticket they joined). Volume, categories, response and resolution times, SLA
  breaches, senders, domains and topics are about these tickets.
- Tickets opened by automatic mail (bounces, auto-replies, list mail...: `automatic` on the
  ticket) are no work: they are left out of every figure, the backlog included, and counted
  apart under `automatic` (tickets of the range, by kind).
- First-response time: first agent reply minus creation, over the tickets answered so far.
  Resolution time: the (last) closing minus creation, over the tickets closed now.
- Median and 90th percentile use the nearest-rank method (see `percentile`): each is one
  of the measured values, and the median of an even count is the lower middle value.
- SLA breach: answered (resolved) after the due time, or not answered (resolved) yet and
  `now` is past the due time. Tickets without a due time have no target and are not counted.
- Backlog: tickets created and not closed at the end of each day of the range (at `until`
  for its last day), counting older tickets still open and following reopenings.
- Topics: see `find_topics`.
"""

from mailsupport.report.facts import Period, TicketFacts, parse_period, parse_when
from mailsupport.report.figures import REPORT_VERSION, build_report, closed_spans, percentile
from mailsupport.report.page import render_html
from mailsupport.report.text import duration, render_text
from mailsupport.report.topics import Topic, clean_text, find_topics

__all__ = [
    "REPORT_VERSION",
    "Period",
    "TicketFacts",
    "Topic",
    "build_report",
    "clean_text",
    "closed_spans",
    "duration",
    "find_topics",
    "parse_period",
    "parse_when",
    "percentile",
    "render_html",
    "render_text",
]
