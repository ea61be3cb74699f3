"""A tiny document model written out as Markdown and as standalone HTML (no markdown package here).

The report is built once as blocks (headings, paragraphs, lists, tables, images) and
rendered twice, so ``report.md`` and ``report.html`` always say the same thing. Inline
markup: ``code`` and **bold**, nothing else.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f2f2f2; }
code { background: #f4f4f4; padding: 0 0.2em; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; }
img { max-width: 100%; margin: 0.3em 0.3em 0.3em 0; vertical-align: top; }
"""


def inline_html(text: str) -> str:
    """Escapes ``text`` and turns `code` and **bold** into tags."""
    out = html.escape(text, quote=False)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", out)


@dataclass
class Document:
    """Blocks in order; ``heading``/``paragraph``/... append, :meth:`markdown`/:meth:`html` render."""

    title: str
    blocks: list[tuple[str, tuple]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """A section heading (level 2 or deeper; the title is level 1)."""
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        """A paragraph of inline text."""
        self.blocks.append(("paragraph", (text,)))

    def bullets(self, items: list[str]) -> None:
        """An unordered list."""
        self.blocks.append(("bullets", (list(items),)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        """A table of inline text cells."""
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def images(self, items: list[tuple[str, str]], width: int | None = None) -> None:
        """Images side by side: ``(alt, relative path)``; ``width`` in px for HTML."""
        self.blocks.append(("images", (list(items), width)))

    def code(self, text: str) -> None:
        """A preformatted block (commands)."""
        self.blocks.append(("code", (text,)))

    def markdown(self) -> str:
        """GitHub-flavoured Markdown."""
        out = [f"# {self.title}", ""]
        for kind, args in self.blocks:
            if kind == "heading":
                out += ["#" * args[0] + f" {args[1]}", ""]
            elif kind == "paragraph":
                out += [args[0], ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in args[0]] + [""]
            elif kind == "table":
                header, rows = args
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "---|" * len(header))
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "images":
                out += [" ".join(f"![{alt}]({src})" for alt, src in args[0]), ""]
            elif kind == "code":
                out += ["```", args[0].rstrip("\n"), "```", ""]
        return "\n".join(out)

    def html(self) -> str:
        """A standalone HTML page (images referenced by the same relative paths)."""
        body = [f"<h1>{inline_html(self.title)}</h1>"]
        for kind, args in self.blocks:
            if kind == "heading":
                body.append(f"<h{args[0]}>{inline_html(args[1])}</h{args[0]}>")
            elif kind == "paragraph":
                body.append(f"<p>{inline_html(args[0])}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in args[0]) + "</ul>")
            elif kind == "table":
                header, rows = args
                head = "".join(f"<th>{inline_html(h)}</th>" for h in header)
                trs = "".join(
                    "<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>" for row in rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "images":
                items, width = args
                size = f' width="{width}"' if width else ""
                body.append(
                    "<p>"
                    + "".join(
                        f'<img src="{html.escape(src)}" alt="{html.escape(alt)}"{size}>' for alt, src in items
                    )
                    + "</p>"
                )
            elif kind == "code":
                body.append(f"<pre>{html.escape(args[0])}</pre>")
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )
