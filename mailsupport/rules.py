"""Classification rules: a TOML file that sets queue, type, priority, line, assignee and tags
on new tickets, from who wrote, to which address, and what the mail says. No I/O but reading
the file; `classify` is pure.

    [[rule]]
    name = "invoices"
    if.subject = ["счёт", "invoice"]          # any of these words (a word's beginning)
    if.from_domain = ["bigcorp.example"]
    then.queue = "billing"
    then.type = "billing"
    then.tags = ["invoice"]

Every condition of a rule must hold; a list holds when any of its items does. Rules apply in
file order: later rules override what earlier ones set (tags add up), and `stop = true` ends
the run. The format is documented in the README; `mailsupport rules test FILE.eml` shows what
would apply and why.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailsupport.errors import ConfigError
from mailsupport.mail import Inbound
from mailsupport.store import NAME, PRIORITIES

__all__ = [
    "ACTIONS",
    "HANDLING_ACTIONS",
    "TICKET_ACTIONS",
    "Classification",
    "Rule",
    "RuleSet",
    "classify",
    "load_rules",
    "parse_rules",
]

CONDITIONS = (
    "from",  # sender address patterns: "ceo@bigcorp.example", "*@bigcorp.example", "billing-*@*"
    "from_domain",  # the sender's domain or a parent domain
    "to",  # our address the mail was sent to (To, Cc, Delivered-To, X-Original-To)
    "subject",  # words the subject contains (matching a word's beginning)
    "body",  # words the text contains
    "text",  # words in the subject or the text
    "subject_regex",
    "body_regex",
    "header",  # a table: header name -> regular expression its value matches
)
# What a rule sets on the ticket, then how the desk handles it: status "spam" or "closed"
# (silently), ack = false (no acknowledgement), notify = false (no mail to the customer from
# the desk on its own: no acknowledgement, no closing notice), drop = true (no ticket: the
# message goes to the quarantine with the rule's name, never deleted).
TICKET_ACTIONS = ("queue", "type", "priority", "line", "assignee", "tags")
HANDLING_ACTIONS = ("status", "ack", "notify", "drop")
ACTIONS = TICKET_ACTIONS + HANDLING_ACTIONS
RULE_STATUSES = ("spam", "closed")
_DELIVERY_HEADERS = ("delivered-to", "x-original-to", "envelope-to")


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    line: int  # where its [[rule]] starts in the file
    checks: tuple[tuple[str, Callable[[Inbound], str | None]], ...]  # (condition, check)
    actions: dict[str, Any]
    stop: bool = False

    def explain(self, message: Inbound) -> list[str] | None:
        """Why each condition holds, or None when one does not."""
        reasons = []
        for _, check in self.checks:
            found = check(message)
            if found is None:
                return None
            reasons.append(found)
        return reasons


@dataclass
class Classification:
    queue: str | None = None
    type: str | None = None
    priority: str | None = None
    line: int | None = None
    assignee: str | None = None
    tags: list[str] = field(default_factory=list)
    status: str | None = None
    ack: bool | None = None
    notify: bool | None = None
    drop: bool | None = None
    matched: list[tuple[str, list[str]]] = field(default_factory=list)  # (rule, reasons)
    decided_by: dict[str, str] = field(default_factory=dict)  # action -> the rule that set it

    def changes(self) -> dict[str, Any]:
        """What to set on the ticket, and how to handle it: only what some rule decided."""
        found = {k: getattr(self, k) for k in ACTIONS if k != "tags"}
        result: dict[str, Any] = {k: v for k, v in found.items() if v is not None}
        if self.tags:
            result["tags"] = list(self.tags)
        return result


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.rules)


def classify(rules: RuleSet, message: Inbound) -> Classification:
    result = Classification()
    for rule in rules.rules:
        reasons = rule.explain(message)
        if reasons is None:
            continue
        result.matched.append((rule.name, reasons))
        for key, value in rule.actions.items():
            if key == "tags":
                result.tags += [t for t in value if t not in result.tags]
            else:
                setattr(result, key, value)
            result.decided_by[key] = rule.name
        if rule.stop:
            break
    return result


# ------------------------------------------------------------------------------------------
# Reading and checking the file
# ------------------------------------------------------------------------------------------


def load_rules(path: Path) -> RuleSet:
    """Read and check a rules file; any problem is one ConfigError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"rules file not found: {path} (check MAILSUPPORT_RULES_FILE)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the rules file {path}: {error}") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str = "rules") -> RuleSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: {error}") from None
    starts = [n for n, line in enumerate(text.splitlines(), 1) if _is_rule_header(line)]
    unknown = set(data) - {"rule"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"{source}, line {_line_of(text, key, 1)}: unknown top-level key {key!r} "
            "(rules are [[rule]] tables)"
        )
    entries = data.get("rule", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: `rule` must be a list of [[rule]] tables")
    rules = []
    for index, entry in enumerate(entries):
        first = starts[index] if index < len(starts) else 1
        last = starts[index + 1] - 1 if index + 1 < len(starts) else len(text.splitlines())
        rules.append(_rule(entry, index, text, first, last, source))
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ConfigError(f"{source}, line {rule.line}: rule name {rule.name!r} is used twice")
        seen.add(rule.name)
    return RuleSet(tuple(rules), source)


def _is_rule_header(line: str) -> bool:
    return line.strip().replace(" ", "").startswith("[[rule]]")


def _line_of(text: str, key: str, first: int, last: int | None = None) -> int:
    """The line within [first, last] where `key` is set: good enough to point at a mistake."""
    lines = text.splitlines()
    pattern = re.compile(rf"(^|[\s.{{,\[]){re.escape(key)}\s*(=|\.|\]|$)")
    for number in range(first, (last or len(lines)) + 1):
        if pattern.search(lines[number - 1].split("#", 1)[0]):
            return number
    return first


def _rule(entry: Any, index: int, text: str, first: int, last: int, source: str) -> Rule:
    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}, line {_line_of(text, key, first, last)}: {why}")

    if not isinstance(entry, dict):
        return _rule({}, index, text, first, last, source)  # pragma: no cover - TOML forbids
    allowed = {"name", "if", "then", "stop"}
    for key in entry:
        if key not in allowed:
            raise fail(key, f"unknown key {key!r} in a rule (use name, if, then, stop)")
    name = entry.get("name", f"rule {index + 1}")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "a rule's name must be a non-empty string")
    conditions = entry.get("if", {})
    actions = entry.get("then", {})
    if not isinstance(conditions, dict) or not conditions:
        raise fail("if", f"rule {name!r} needs conditions: if.subject = [...], if.from = ...")
    if not isinstance(actions, dict) or not actions:
        raise fail("then", f"rule {name!r} needs actions: then.queue = ..., then.tags = [...]")
    stop = entry.get("stop", False)
    if not isinstance(stop, bool):
        raise fail("stop", "stop must be true or false")
    checks = []
    for key, value in conditions.items():
        if key not in CONDITIONS:
            raise fail(key, f"unknown condition {key!r} (use {', '.join(CONDITIONS)})")
        try:
            checks.append((key, _condition(key, value)))
        except ValueError as error:
            raise fail(key, f"if.{key}: {error}") from None
    checked: dict[str, Any] = {}
    for key, value in actions.items():
        if key not in ACTIONS:
            raise fail(key, f"unknown action {key!r} (use {', '.join(ACTIONS)})")
        try:
            checked[key] = _action(key, value)
        except ValueError as error:
            raise fail(key, f"then.{key}: {error}") from None
    return Rule(name.strip(), first, tuple(checks), checked, stop)


def _strings(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise ValueError("give a string or a list of strings")
    cleaned = [v.strip() for v in items if v.strip()]
    if not cleaned:
        raise ValueError("give at least one non-empty string")
    return cleaned


def _normalize(text: str) -> str:
    return text.lower().replace("ё", "е")


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"bad regular expression {pattern!r}: {error}") from None


def _condition(key: str, value: Any) -> Callable[[Inbound], str | None]:
    if key == "header":
        if not isinstance(value, dict) or not value:
            raise ValueError('give a table of header = "regular expression"')
        wanted = [(name.lower(), _regex(_strings(v)[0])) for name, v in value.items()]
        return lambda m: _headers_match(m, wanted)
    items = _strings(value)
    if key == "from":
        patterns = [p.lower() for p in items]
        return lambda m: _first(
            f"from {m.from_.key}" for p in patterns if m.from_ and fnmatch.fnmatch(m.from_.key, p)
        )
    if key == "from_domain":
        domains = [d.lower().lstrip("@.") for d in items]
        return lambda m: _from_domain(m, domains)
    if key == "to":
        addresses = {a.lower() for a in items}
        return lambda m: _first(f"to {a}" for a in _recipients(m) if a in addresses)
    if key.endswith("_regex"):
        patterns = [_regex(p) for p in items]
        where = key.removesuffix("_regex")
        return lambda m: _first(
            f"{where} matches /{p.pattern}/" for p in patterns if p.search(_field(m, where))
        )
    words = [(w, re.compile(rf"(?<!\w){re.escape(_normalize(w))}")) for w in items]
    return lambda m: _first(
        f"{key} has {word!r}" for word, w in words if w.search(_normalize(_field(m, key)))
    )


def _field(message: Inbound, where: str) -> str:
    if where == "subject":
        return message.subject
    if where == "body":
        return message.text
    return f"{message.subject}\n{message.text}"


def _first(found: Iterable[str]) -> str | None:
    return next(iter(found), None)


def _headers_match(message: Inbound, wanted: Sequence[tuple[str, re.Pattern[str]]]) -> str | None:
    for name, pattern in wanted:
        if not any(pattern.search(v) for v in message.header_all(name)):
            return None
    return ", ".join(f"header {name} matches /{pattern.pattern}/" for name, pattern in wanted)


def _from_domain(message: Inbound, domains: Sequence[str]) -> str | None:
    if message.from_ is None:
        return None
    domain = message.from_.key.rpartition("@")[2]
    return _first(f"from domain {d}" for d in domains if domain == d or domain.endswith("." + d))


def _recipients(message: Inbound) -> list[str]:
    found = [a.key for a in (*message.to, *message.cc)]
    for name in _DELIVERY_HEADERS:
        found += [v.strip().strip("<>").lower() for v in message.header_all(name)]
    return found


def _action(key: str, value: Any) -> Any:
    if key in ("ack", "notify", "drop"):
        if not isinstance(value, bool):
            raise ValueError("give true or false")
        return value
    if key == "status":
        if value not in RULE_STATUSES:
            raise ValueError(f"a rule sets the status {' or '.join(map(repr, RULE_STATUSES))}")
        return value
    if key == "tags":
        tags = [t.lower() for t in _strings(value)]
        for tag in tags:
            if not NAME.fullmatch(tag):
                raise ValueError(f"not a tag: {tag!r} (letters, digits and . : / - _)")
        return tags
    if key == "line":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 9:
            raise ValueError("a line is a number from 1 (first line) to 9")
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError("give a non-empty string")
    value = value.strip()
    if key == "priority":
        if value.lower() not in PRIORITIES:
            raise ValueError(f"unknown priority {value!r}: use one of {', '.join(PRIORITIES)}")
        return value.lower()
    if key in ("queue", "type"):
        if not NAME.fullmatch(value.lower()):
            raise ValueError(f"{value!r}: one word (letters, digits and . : / - _)")
        return value.lower()
    return " ".join(value.split())  # assignee: an agent's name
