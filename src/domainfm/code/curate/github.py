"""GitHub issues and pull requests, from GitHub REST API JSON, filtered and formatted as StarCoder2 did.

Input: one JSON file per thread, GitHub's own objects inside one wrapper object:

    {"issue": GET /repos/O/R/issues/N, "comments": GET /repos/O/R/issues/N/comments}
    {"pull_request": GET /repos/O/R/pulls/N, "comments": GET .../issues/N/comments,
     "reviews": GET .../pulls/N/reviews, "review_comments": GET .../pulls/N/comments,
     "files": GET .../pulls/N/files}

Processing (StarCoder §A / StarCoder2 §2.2-2.3, bigcode-dataset ``preprocessing/utils/utils_issues.py``):
auto-generated e-mail reply text is stripped, comments over 100 lines keep their first 80 and last 20
lines, bot accounts are dropped (GitHub's ``user.type == "Bot"`` plus bigcode's login lists), issues
shorter than 200 characters or single-user threads over 7,000 characters / 10 events are dropped, PRs
follow StarCoder2's PR filters (title, description, approved or merged, has a diff), and authors become
``username_0``, ``username_1``, ... in order of appearance. Formats: StarCoder2 §5.2 (PRs) and §5.3
(issues), with the sentinel tokens of `domainfm.code.tokenizer.special`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from domainfm.code.tokenizer.special import STARCODER2_SPECIAL_TOKENS

_TOK = {t[1:-1]: t for t in STARCODER2_SPECIAL_TOKENS}
ISSUE_START, ISSUE_COMMENT, ISSUE_CLOSED = _TOK["issue_start"], _TOK["issue_comment"], _TOK["issue_closed"]
PR, PR_STATUS, PR_IS_MERGED, PR_FILE = _TOK["pr"], _TOK["pr_status"], _TOK["pr_is_merged"], _TOK["pr_file"]
PR_DIFF, PR_DIFF_HUNK, PR_COMMENT, PR_EVENT_ID = _TOK["pr_diff"], _TOK["pr_diff_hunk"], _TOK["pr_comment"], \
    _TOK["pr_event_id"]
PR_REVIEW, PR_REVIEW_STATE, PR_REVIEW_COMMENT = _TOK["pr_review"], _TOK["pr_review_state"], _TOK["pr_review_comment"]
PR_REPLY_REVIEW, PR_REPLY_COMMENT = _TOK["pr_in_reply_to_review_id"], _TOK["pr_in_reply_to_comment_id"]
PR_COMMENT_LINE, REPO_NAME = _TOK["pr_diff_hunk_comment_line"], _TOK["repo_name"]

ISSUE_LANGUAGE = "GitHub Issues"
PR_LANGUAGE = "GitHub Pull Requests"

# bigcode-dataset preprocessing/utils/utils_issues.py
BOT_AUTHORS = frozenset({"Apache-HBase", "AutorestCI", "CLAassistant", "cmsbuild", "codecov-io", "codecov-commenter",
                         "coveralls", "danger-public", "dnfclas", "msftclas", "PyDocTeur", "SparkQA",
                         "karma-pr-reporter", "claassistantio", "probot-stale"})
BOT_KEYWORDS = ("[bot]", "botmanager", "bors-", "jenkins", "k8s-", "-test-", "travis")
BOT_SUFFIXES = ("-automaton", "-automation", "-benchmark", "-build", "-deployer", "-cloud", "bot", "-ci", "-linter",
                "-teamcity", "-test", "-testing", "-service-account")
GITHUB_EMAILS = [re.compile(p, re.DOTALL) for p in (
    r"(.*)From:.+Reply to this email directly.+view it on GitHub(.*)\n?(.*)",
    r"(.*)On.+notifications@github.com.+wrote:.+Reply to this email directly.+view it on GitHub(.*)\n?(.*)",
    r"(.*)Signed-off-by: .+<.+>(.*?)\n?(.*)")]
GITHUB_EMAIL_DATE = re.compile(r"\d+/\d+/\d+ \d{2}:\d{2} [AP]M.+wrote")
GITHUB_EMAIL_LINEBREAK = re.compile(r"_{20,}")

# StarCoder2 §2.2 (issues) and §2.3 (pull requests)
ISSUE_MIN_CHARS, ISSUE_SINGLE_USER_MAX_CHARS, ISSUE_SINGLE_USER_MAX_EVENTS = 200, 7000, 10
MAX_COMMENT_LINES, KEEP_LAST_LINES = 100, 20
PR_TITLE_MIN, PR_TITLE_MAX, PR_DESC_MIN, PR_DESC_MAX_CHARS = 10, 500, 20, 1000
PR_DESC_HEAD_LINES, PR_DESC_TAIL_LINES = 60, 20
PR_TITLE_WORDS = ("dependencies", "dependency", "depend", "release")
PR_MIN_COMMENT_CHARS, PR_MAX_DIFF_HUNK_CHARS = 20, 10_000
_REVIEW_STATES = {"APPROVED": "approved", "CHANGES_REQUESTED": "changes_required", "COMMENTED": "commented",
                  "DISMISSED": "dismissed"}


class ThreadDropped(ValueError):
    """The whole thread is dropped; `reason` is the drop reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_bot(user: dict | None) -> bool:
    """GitHub marks app accounts ``type: "Bot"``; bigcode's name rules catch bot-like user accounts."""
    if not user:
        return True  # deleted accounts ("ghost") carry no user object
    if user.get("type") == "Bot":
        return True
    login = str(user.get("login") or "")
    low = login.lower()
    return (login in BOT_AUTHORS or any(k in low for k in BOT_KEYWORDS)
            or any(low.endswith(s) for s in BOT_SUFFIXES))


def strip_email_text(text: str | None) -> str:
    """Remove what GitHub's e-mail gateway adds to replies ("On ... notifications@github.com wrote:",
    "Reply to this email directly", quoted history). Unlike bigcode's line-wise fallback, ordinary
    markdown quotes in comments written on the web are left alone."""
    text = (text or "").strip()
    for pattern in GITHUB_EMAILS:
        m = pattern.match(text)
        if m:
            text = m.group(1) + m.group(3)
            return GITHUB_EMAIL_LINEBREAK.sub("", text).strip()
    lines = text.split("\n")
    if any("notifications@github.com" in ln or GITHUB_EMAIL_DATE.search(ln) or "Reply to this email directly" in ln
           for ln in lines):
        start, end = len(lines), -1
        for i, line in enumerate(lines):
            s = line.strip()
            if "notifications@github.com" in s or GITHUB_EMAIL_DATE.search(s):
                start = min(start, i)
            if "Reply to this email directly" in s or (start < len(lines) and s.startswith(">")):
                end = i
        lines = lines[:start] + lines[end + 1:] if end >= start else lines[:start]
    return GITHUB_EMAIL_LINEBREAK.sub("", "\n".join(lines)).strip()


def truncate_lines(text: str, max_lines: int = MAX_COMMENT_LINES, tail: int = KEEP_LAST_LINES) -> str:
    """Long comments cut in the middle: the first max_lines - tail lines, ``[Truncated]``, the last `tail`."""
    lines = text.split("\n")
    if len(lines) <= max_lines:
        return text
    return "\n".join(lines[: max_lines - tail]) + "\n[Truncated]\n" + "\n".join(lines[-tail:])


class Anonymizer:
    """Logins -> ``username_<i>`` in order of first appearance; also replaces them (and @mentions of
    anyone else) inside texts, on word boundaries (bigcode replaced raw substrings)."""

    _MENTION = re.compile(r"(?<![\w/.-])@([A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38})(?![\w-])")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, login: str) -> str:
        key = login.lower()
        if key not in self.names:
            self.names[key] = f"username_{len(self.names)}"
        return self.names[key]

    def text(self, text: str) -> str:
        text = self._MENTION.sub(lambda m: "@" + self(m.group(1)), text)
        for key, alias in sorted(self.names.items(), key=lambda kv: -len(kv[0])):
            if not key.startswith("username_"):
                text = re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", alias, text, flags=re.IGNORECASE)
        return text


def _login(obj: dict) -> str:
    return str((obj.get("user") or {}).get("login") or "ghost")


# ----------------------------------------------------------------------------------------------- issues


def format_issue(issue: dict, comments: list[dict]) -> str:
    """StarCoder2 §5.3: ``<issue_start>Title: t\\nusername_0: body<issue_comment>username_1: c1 ...``,
    ``<issue_closed>`` where the close happened in the timeline. Raises ThreadDropped."""
    if issue.get("pull_request"):
        raise ThreadDropped("issue_is_pull_request")  # the issues API lists PRs too; StarCoder2 kept them apart
    if is_bot(issue.get("user")):
        raise ThreadDropped("bot_issue")
    events = [(str(issue.get("created_at") or ""), _login(issue), issue.get("body"))]
    events += [(str(c.get("created_at") or ""), _login(c), c.get("body"))
               for c in sorted(comments, key=lambda c: str(c.get("created_at") or "")) if not is_bot(c.get("user"))]
    events = [(t, who, truncate_lines(strip_email_text(body))) for t, who, body in events]
    text_size = sum(len(body) for _, _, body in events)
    if text_size < ISSUE_MIN_CHARS:
        raise ThreadDropped("issue_too_short")
    if len({who.lower() for _, who, _ in events}) < 2 and (
            text_size > ISSUE_SINGLE_USER_MAX_CHARS or len(events) > ISSUE_SINGLE_USER_MAX_EVENTS):
        raise ThreadDropped("single_user_issue")
    anon = Anonymizer()
    for _, who, _ in events:
        anon(who)
    closed_at = str(issue.get("closed_at") or "") if issue.get("state") == "closed" else None
    title = anon.text(str(issue.get("title") or "").strip())
    out = [f"{ISSUE_START}Title: {title}\n{anon(events[0][1])}: {anon.text(events[0][2])}"]
    closed_done = False
    for t, who, body in events[1:]:
        if closed_at is not None and not closed_done and closed_at and t > closed_at:
            out.append(ISSUE_CLOSED)
            closed_done = True
        out.append(f"{ISSUE_COMMENT}{anon(who)}: {anon.text(body)}")
    if closed_at is not None and not closed_done:
        out.append(ISSUE_CLOSED)
    return "".join(out)


# ---------------------------------------------------------------------------------------- pull requests


def _split_hunks(patch: str) -> list[str]:
    """A unified-diff `patch` (GitHub's pulls/N/files) split into hunks at ``@@`` headers."""
    hunks: list[list[str]] = []
    for line in patch.split("\n"):
        if line.startswith("@@") or not hunks:
            hunks.append([])
        hunks[-1].append(line)
    return ["\n".join(h).rstrip("\n") for h in hunks if any(x.strip() for x in h)]


def _pr_description(body: str) -> str:
    lines = body.split("\n")
    if len(lines) > PR_DESC_HEAD_LINES + PR_DESC_TAIL_LINES:
        body = "\n".join(lines[:PR_DESC_HEAD_LINES] + lines[-PR_DESC_TAIL_LINES:])
    return body[:PR_DESC_MAX_CHARS]


def format_pull_request(pr: dict, comments: list[dict], reviews: list[dict], review_comments: list[dict],
                        files: list[dict], repo_name: str) -> str:
    """StarCoder2 §5.2 for the PR's current state (the REST API has no per-head-commit history): title
    and description, ``<pr_status>opened``, the diff hunks of `files`, then general comments, reviews and
    code review comments in time order, and the closing block when the PR is closed. Raises ThreadDropped."""
    if is_bot(pr.get("user")):
        raise ThreadDropped("bot_pull_request")
    title = str(pr.get("title") or "").strip()[:PR_TITLE_MAX]
    if len(title) < PR_TITLE_MIN or any(w in title.lower() for w in PR_TITLE_WORDS):
        raise ThreadDropped("pr_title_filter")
    body = strip_email_text(pr.get("body"))
    if len(body) < PR_DESC_MIN or "Qwiet" in body:
        raise ThreadDropped("pr_description_filter")
    merged = bool(pr.get("merged") or pr.get("merged_at"))
    if not merged and not any(r.get("state") == "APPROVED" and not is_bot(r.get("user")) for r in reviews):
        raise ThreadDropped("pr_not_approved_or_merged")
    diffs = [(f.get("filename", ""), _split_hunks(f["patch"])) for f in files if f.get("patch")]
    diffs = [(name, hunks) for name, hunks in diffs if hunks]
    if not diffs:
        raise ThreadDropped("pr_no_diff")
    anon = Anonymizer()
    anon(_login(pr))
    events: list[tuple[str, int, Callable[[], list[str]]]] = []

    def add(when: Any, order: int, render: Callable[[], list[str]]) -> None:
        events.append((str(when or ""), order, render))

    for c in comments:
        text = truncate_lines(strip_email_text(c.get("body")))
        if is_bot(c.get("user")) or len(text) < PR_MIN_COMMENT_CHARS:
            continue
        add(c.get("created_at"), len(events), lambda c=c, text=text: [
            f"{PR_COMMENT}{anon(_login(c))}: {anon.text(text)}", f"{PR_EVENT_ID}{c.get('id')}"])
    for r in reviews:
        if is_bot(r.get("user")) or r.get("state") == "PENDING":
            continue
        state = _REVIEW_STATES.get(str(r.get("state")), str(r.get("state") or "").lower())
        add(r.get("submitted_at"), len(events), lambda r=r, state=state: [
            f"{PR_REVIEW}{anon(_login(r))}: {anon.text(truncate_lines(strip_email_text(r.get('body'))))}",
            f"{PR_EVENT_ID}{r.get('id')}", f"{PR_REVIEW_STATE}{state}"])
    for rc in review_comments:
        if is_bot(rc.get("user")):
            continue

        def render(rc: dict = rc) -> list[str]:
            lines = [PR_REVIEW_COMMENT, f"{PR_EVENT_ID}{rc.get('id')}"]
            if rc.get("pull_request_review_id") is not None:
                lines.append(f"{PR_REPLY_REVIEW}{rc['pull_request_review_id']}")
            if rc.get("in_reply_to_id") is not None:
                lines.append(f"{PR_REPLY_COMMENT}{rc['in_reply_to_id']}")
            lines.append(f"{PR_FILE}{rc.get('path', '')}")
            line_no = rc.get("line") if rc.get("line") is not None else rc.get("original_line")
            if line_no is not None:
                lines.append(f"{PR_COMMENT_LINE}{line_no}")
            hunk = str(rc.get("diff_hunk") or "")
            if hunk and len(hunk) <= PR_MAX_DIFF_HUNK_CHARS:  # StarCoder2: longer hunks dropped, comment kept
                lines.append(f"{PR_DIFF_HUNK}{hunk}")
            text = truncate_lines(strip_email_text(rc.get("body")))
            lines.append(f"{PR_COMMENT}{anon(_login(rc))}: {anon.text(text)}")
            return lines

        add(rc.get("created_at"), len(events), render)
    out = [f"{PR}Title: {anon.text(title)}\n{anon(_login(pr))}: {anon.text(_pr_description(body))}",
           f"{PR_STATUS}opened", f"{REPO_NAME}{repo_name}", PR_DIFF]
    for name, hunks in diffs:
        out.append(f"{PR_FILE}{name}")
        out += [f"{PR_DIFF_HUNK}{h}" for h in hunks]
    for _, _, render in sorted(events, key=lambda e: (e[0], e[1])):
        out += render()
    if pr.get("state") == "closed":
        closer = pr.get("merged_by") if merged else pr.get("closed_by")
        who = anon(str(closer["login"])) if isinstance(closer, dict) and closer.get("login") else ""
        out += [f"{PR}{who}", f"{PR_STATUS}closed", f"{PR_IS_MERGED}{merged}"]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ files


def format_thread(text: str, repo_name: str) -> tuple[str, str]:
    """(kind, formatted text) of one thread file (see the module docstring). Raises ThreadDropped with
    ``not_github_thread`` for JSON that is not such a file."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise ThreadDropped("corrupt_github_json") from None
    if not isinstance(obj, dict):
        raise ThreadDropped("not_github_thread")

    def lst(key: str) -> list[dict]:
        v = obj.get(key) or []
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise ThreadDropped("not_github_thread")
        return v

    if isinstance(obj.get("pull_request"), dict) and "issue" not in obj:
        return "pull_request", format_pull_request(obj["pull_request"], lst("comments"), lst("reviews"),
                                                   lst("review_comments"), lst("files"), repo_name)
    if isinstance(obj.get("issue"), dict):
        return "issue", format_issue(obj["issue"], lst("comments"))
    raise ThreadDropped("not_github_thread")
