"""`kb list | show | search`: the knowledge base of FAQ articles (see kb/README.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mailsupport.cli.app import app, print_json, state, sub_app

if TYPE_CHECKING:
    from mailsupport.kb import KnowledgeBase

AGENT = "Agent"  # the help panel of the agents' commands

kb_app = sub_app(
    """The knowledge base: FAQ articles suggested in acknowledgements and inserted into replies.

    Examples:
        mailsupport kb list
        mailsupport kb search password reset
    """
)
app.add_typer(kb_app, name="kb", rich_help_panel=AGENT)

JSON_OPTION = typer.Option(False, "--json", help="JSON for scripts.")


def _load(ctx: typer.Context) -> KnowledgeBase:
    """The configured base, strictly: a broken file is an error here (exit 2), naming its line."""
    from mailsupport.kb import kb_directory, load_kb

    return load_kb(kb_directory(state(ctx).settings))


@kb_app.command("list")
def kb_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List the articles: ID, language, title and keywords.

    The ID is the file name without .md; language * means every language;
    the keywords are on the line below the title.

    --json gives a list of objects: slug, language (null for every
    language), title, keywords, path.

    Exit status: 0 listed (even none), 2 no knowledge base configured
    (set MAILSUPPORT_KB_DIR) or a broken article file.

    Examples:
        mailsupport kb list
        mailsupport kb list --json
    """
    kb = _load(ctx)
    if as_json:
        print_json([article.as_json() for article in kb.articles])
        return
    if not kb.articles:
        typer.echo(f"no articles in {kb.directory}")
        return
    width = max(len(article.slug) for article in kb.articles)
    for article in kb.articles:
        typer.echo(f"{article.slug:<{width}}  {article.language or '*':<2}  {article.title}")
        if article.keywords:
            typer.echo(f"{'':<{width}}      {', '.join(article.keywords)}")


@kb_app.command("show")
def kb_show(
    ctx: typer.Context,
    slug: str = typer.Argument(..., metavar="ARTICLE", help="The article ID, as in `kb list`."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one article as `reply N --kb ARTICLE` inserts it (plain text).

    --json gives slug, language, title, keywords, path, body (the Markdown
    as written) and text (the plain text a reply gets).

    Exit status: 0 shown, 1 no such article, 2 no knowledge base or a
    broken article file.

    Examples:
        mailsupport kb show reset-password
    """
    from mailsupport.errors import NotFoundError
    from mailsupport.kb import article_text, not_found_message

    kb = _load(ctx)
    article = kb.get(slug)
    if article is None:
        raise NotFoundError(not_found_message(kb, slug))
    text = article_text(article)
    if as_json:
        print_json(article.as_json() | {"body": article.body, "text": text})
        return
    typer.echo(f"{article.slug}  [{article.language or 'any language'}]  {article.path}")
    if article.keywords:
        typer.echo(f"keywords: {', '.join(article.keywords)}")
    typer.echo("")
    typer.echo(text, nl=False)


@kb_app.command("search")
def kb_search(
    ctx: typer.Context,
    query: list[str] = typer.Argument(
        ..., metavar="QUERY", help="Words, or a whole customer message in quotes."
    ),
    language: str | None = typer.Option(
        None, "--language", metavar="ru|en", help="Only articles in this language (or in any)."
    ),
    limit: int = typer.Option(10, metavar="N", min=1, help="At most this many articles."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Find articles by their words, best first, with their scores.

    Any form of a word finds the others ("счета" finds "счёт", "resetting"
    finds "reset"); keywords count most, then the title, then the text.
    The score (0 to 1) says how much of the article the query covers and
    how much of the query the article covers. Articles marked * would be
    suggested in an acknowledgement for this text: their score reaches
    MAILSUPPORT_KB_THRESHOLD and they share at least two words with it,
    one from their keywords or title.

    --json gives a list of objects: slug, language, title, keywords, path,
    score, matched (the query's words found), suggested (true or false).

    Exit status: 0 found, 1 nothing found (like grep), 2 no word to search
    for, no knowledge base, or a broken article file.

    Examples:
        mailsupport kb search how do I reset my password
        mailsupport kb search --language ru "не приходит счёт на почту"
    """
    from mailsupport.errors import NotFoundError, UsageError
    from mailsupport.kb import DEFAULT_THRESHOLD, LANGUAGES, is_suggestible, search
    from mailsupport.words import words

    if language is not None:
        language = language.strip().lower()
        if language not in LANGUAGES:
            raise UsageError(f"unknown language {language!r}: use one of {', '.join(LANGUAGES)}")
    text = " ".join(query).strip()
    if not words(text):
        raise UsageError(f"nothing to search for in {text!r}: give a word that is not 'the', 'и'…")
    st = state(ctx)
    kb = _load(ctx)
    threshold = float(getattr(st.settings, "kb_threshold", DEFAULT_THRESHOLD))
    found = search(kb, text, language=language, limit=limit)
    if as_json:
        print_json([f.as_json() | {"suggested": is_suggestible(f, threshold)} for f in found])
        if not found:
            raise typer.Exit(1)
        return
    if not found:
        where = f" in {language}" if language else ""
        raise NotFoundError(f"no article{where} matches {text!r}")
    width = max(len(f.article.slug) for f in found)
    for f in found:
        mark = "*" if is_suggestible(f, threshold) else " "
        typer.echo(
            f"{mark} {f.score:.2f}  {f.article.slug:<{width}}  {f.article.language or '*':<2}  "
            f"{f.article.title}  ({', '.join(f.matched)})"
        )
