"""GitHub issues and pull requests from REST API JSON: bots, e-mail replies, anonymisation, StarCoder2's
formats (§5.2, §5.3) and filters (§2.2, §2.3), and a curation run over a repository's `.github-api/`.

The fixtures have the shape and field names GitHub's REST API returns (GET /repos/O/R/issues/N,
.../issues/N/comments, .../pulls/N, .../pulls/N/reviews, .../pulls/N/comments, .../pulls/N/files),
trimmed of URL fields; the expected texts are written out by hand from the papers' templates.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest

from domainfm.cli import main
from domainfm.code.curate import github
from domainfm.code.tokenizer.special import STARCODER2_SPECIAL_TOKENS

API = "https://api.github.com/repos/octo-org/widgets"


def user(login: str, uid: int, kind: str = "User") -> dict:
    return {"login": login, "id": uid, "node_id": f"MDQ6VXNlcj{uid}", "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            "gravatar_id": "", "url": f"https://api.github.com/users/{login}", "type": kind, "site_admin": False}


ALICE, BOB, CAROL = user("alice-dev", 583231), user("bobsmith", 1024025), user("carol-k", 7743)
CODECOV = user("codecov[bot]", 22429695, "Bot")
K8S = user("k8s-ci-robot", 20407524)  # a bot run from a User account: caught by bigcode's "k8s-" keyword

ISSUE = {
    "url": f"{API}/issues/1347", "repository_url": API, "html_url": "https://github.com/octo-org/widgets/issues/1347",
    "id": 1990532105, "node_id": "I_kwDOBXlKcM52pPeJ", "number": 1347,
    "title": "Widget.resize() raises ZeroDivisionError when height is 0",
    "user": ALICE, "labels": [{"id": 208045946, "name": "bug", "color": "f29513", "default": True}],
    "state": "closed", "locked": False, "assignee": None, "assignees": [], "milestone": None, "comments": 4,
    "created_at": "2024-03-01T09:12:44Z", "updated_at": "2024-03-04T16:30:02Z", "closed_at": "2024-03-04T16:30:01Z",
    "author_association": "CONTRIBUTOR", "active_lock_reason": None,
    "body": "Calling `Widget(width=10, height=0).resize(2)` crashes:\r\n\r\n```\r\nTraceback (most recent call last):\r\n"
            "  File \"widgets/core.py\", line 88, in resize\r\n    ratio = self.width / self.height\r\n"
            "ZeroDivisionError: division by zero\r\n```\r\n\r\nExpected: a ValueError with a clear message.",
    "closed_by": BOB, "reactions": {"total_count": 0}, "state_reason": "completed",
}
COMMENTS = [
    {"id": 1973310001, "node_id": "IC_kwDOBXlKcM51nq4x", "user": BOB, "created_at": "2024-03-01T10:02:11Z",
     "updated_at": "2024-03-01T10:02:11Z", "author_association": "MEMBER",
     "body": "Thanks @alice-dev, confirmed on main. A zero height should be rejected in `__init__`."},
    {"id": 1973310002, "node_id": "IC_kwDOBXlKcM51nq4y", "user": CODECOV, "created_at": "2024-03-02T08:00:00Z",
     "updated_at": "2024-03-02T08:00:00Z", "author_association": "NONE",
     "body": "## Codecov Report\nAll modified and coverable lines are covered by tests :white_check_mark:"},
    {"id": 1973310003, "node_id": "IC_kwDOBXlKcM51nq4z", "user": ALICE, "created_at": "2024-03-02T09:15:00Z",
     "updated_at": "2024-03-02T09:15:00Z", "author_association": "CONTRIBUTOR",
     "body": "Makes sense, I opened a PR for it.\r\n\r\nOn Fri, Mar 1, 2024 at 11:02 AM bobsmith <notifications@github.com> wrote:\r\n"
             "> Thanks @alice-dev, confirmed on main.\r\n>\r\n> —\r\n> Reply to this email directly, view it on GitHub\r\n"
             "> <https://github.com/octo-org/widgets/issues/1347#issuecomment-1973310001>, or unsubscribe.\r\n"},
    {"id": 1973310004, "node_id": "IC_kwDOBXlKcM51nq5A", "user": K8S, "created_at": "2024-03-03T00:00:00Z",
     "updated_at": "2024-03-03T00:00:00Z", "author_association": "NONE",
     "body": "/lgtm cancel //PR changed after LGTM, removing LGTM."},
    {"id": 1973310005, "node_id": "IC_kwDOBXlKcM51nq5B", "user": CAROL, "created_at": "2024-03-05T12:00:00Z",
     "updated_at": "2024-03-05T12:00:00Z", "author_association": "NONE",
     "body": "Still happens with `height=-1` on 2.3.0, should negatives be rejected too?"},
]
# StarCoder2 §5.3: <issue_start>Title: title\nusername_0: comment_0<issue_comment>username_1: comment_1 ...
# <issue_closed> where the issue was closed; bots gone, the e-mail reply trimmed, logins anonymised
ISSUE_TEXT = (
    "<issue_start>Title: Widget.resize() raises ZeroDivisionError when height is 0\n"
    "username_0: Calling `Widget(width=10, height=0).resize(2)` crashes:\r\n\r\n```\r\nTraceback (most recent call "
    "last):\r\n  File \"widgets/core.py\", line 88, in resize\r\n    ratio = self.width / self.height\r\n"
    "ZeroDivisionError: division by zero\r\n```\r\n\r\nExpected: a ValueError with a clear message."
    "<issue_comment>username_1: Thanks @username_0, confirmed on main. A zero height should be rejected in `__init__`."
    "<issue_comment>username_0: Makes sense, I opened a PR for it."
    "<issue_closed>"
    "<issue_comment>username_2: Still happens with `height=-1` on 2.3.0, should negatives be rejected too?"
)


def test_issue_format_bots_email_and_usernames():
    assert github.format_issue(ISSUE, COMMENTS) == ISSUE_TEXT
    for tok in ("<issue_start>", "<issue_comment>", "<issue_closed>"):
        assert tok in STARCODER2_SPECIAL_TOKENS


@pytest.mark.parametrize("login,kind,bot", [
    ("dependabot[bot]", "Bot", True), ("renovate[bot]", "Bot", True), ("codecov-commenter", "User", True),
    ("k8s-ci-robot", "User", True), ("tensorflow-jenkins", "User", True), ("mycorp-ci", "User", True),
    ("SparkQA", "User", True), ("alice-dev", "User", False), ("robotics-fan", "User", False),
])
def test_bot_accounts(login, kind, bot):
    assert github.is_bot(user(login, 1, kind)) is bot


def test_issue_filters():
    short = dict(ISSUE, body="Crash.", state="open", closed_at=None)
    with pytest.raises(github.ThreadDropped, match="issue_too_short"):
        github.format_issue(short, [])
    with pytest.raises(github.ThreadDropped, match="bot_issue"):
        github.format_issue(dict(ISSUE, user=user("github-actions[bot]", 41898282, "Bot")), COMMENTS)
    with pytest.raises(github.ThreadDropped, match="issue_is_pull_request"):
        github.format_issue(dict(ISSUE, pull_request={"url": f"{API}/pulls/1348", "merged_at": None}), [])
    lone = [dict(COMMENTS[0], user=ALICE, id=i, created_at=f"2024-03-0{1 + i % 8}T00:00:00Z") for i in range(11)]
    with pytest.raises(github.ThreadDropped, match="single_user_issue"):
        github.format_issue(ISSUE, lone)  # one user, 12 events > 10
    open_issue = dict(ISSUE, state="open", closed_at=None)
    assert "<issue_closed>" not in github.format_issue(open_issue, COMMENTS)


PULL = {
    "url": f"{API}/pulls/1348", "id": 1764422051, "node_id": "PR_kwDOBXlKcM5pKwij", "number": 1348,
    "html_url": "https://github.com/octo-org/widgets/pull/1348", "state": "closed", "locked": False,
    "title": "Reject non-positive heights in Widget.__init__", "user": ALICE,
    "body": "Fixes #1347.\r\n\r\nA height of 0 made `resize()` divide by zero; `__init__` now raises ValueError.",
    "created_at": "2024-03-02T09:10:00Z", "updated_at": "2024-03-04T16:30:00Z", "closed_at": "2024-03-04T16:29:58Z",
    "merged_at": "2024-03-04T16:29:58Z", "merge_commit_sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
    "head": {"label": "alice-dev:fix-height", "ref": "fix-height", "sha": "e5bd3914e2e596debea16f433f57875b5b90bcd6"},
    "base": {"label": "octo-org:main", "ref": "main", "sha": "9c6d7a3f5c1e3b8f7e2f0f3c9d8b6a5e4d3c2b1a"},
    "author_association": "CONTRIBUTOR", "draft": False, "merged": True, "mergeable": None, "merged_by": BOB,
    "comments": 2, "review_comments": 2, "commits": 2, "additions": 4, "deletions": 0, "changed_files": 1,
}
FILES = [{"sha": "bbcd538c8e72b8c175046e27cc8f907076331401", "filename": "widgets/core.py", "status": "modified",
          "additions": 4, "deletions": 0, "changes": 4,
          "patch": "@@ -40,6 +40,10 @@ class Widget:\n     def __init__(self, width, height):\n"
                   "+        if height <= 0:\n+            raise ValueError(\n"
                   "+                f\"height must be positive, got {height}\"\n+            )\n"
                   "         self.width = width\n         self.height = height\n"}]
PR_COMMENTS = [
    {"id": 1974000001, "user": CODECOV, "created_at": "2024-03-02T09:20:00Z", "author_association": "NONE",
     "body": "## Codecov Report\nPatch coverage: 100.00% and no project coverage change."},
    {"id": 1974000002, "user": CAROL, "created_at": "2024-03-02T11:00:00Z", "author_association": "NONE",
     "body": "+1"},  # under 20 characters: dropped (StarCoder2)
]
REVIEWS = [
    {"id": 1912345601, "node_id": "PRR_kwDOBXlKcM5x", "user": BOB, "body": "", "state": "COMMENTED",
     "submitted_at": "2024-03-03T08:00:00Z", "commit_id": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
     "author_association": "MEMBER"},
    {"id": 1912345602, "node_id": "PRR_kwDOBXlKcM5y", "user": BOB, "body": "LGTM, thanks!", "state": "APPROVED",
     "submitted_at": "2024-03-04T16:00:00Z", "commit_id": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
     "author_association": "MEMBER"},
]
REVIEW_COMMENTS = [
    {"pull_request_review_id": 1912345601, "id": 1515000001, "node_id": "PRRC_kwDOBXlKcM5a",
     "diff_hunk": "@@ -40,6 +40,10 @@ class Widget:\n     def __init__(self, width, height):\n+        if height <= 0:",
     "path": "widgets/core.py", "commit_id": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
     "original_commit_id": "e5bd3914e2e596debea16f433f57875b5b90bcd6", "user": BOB,
     "body": "Should `alice-dev` also check the width here?", "created_at": "2024-03-03T08:00:00Z",
     "author_association": "MEMBER", "line": 42, "original_line": 42, "side": "RIGHT"},
    {"pull_request_review_id": 1912345603, "id": 1515000002, "node_id": "PRRC_kwDOBXlKcM5b",
     "diff_hunk": "@@ -40,6 +40,10 @@ class Widget:\n     def __init__(self, width, height):\n+        if height <= 0:",
     "path": "widgets/core.py", "commit_id": "e5bd3914e2e596debea16f433f57875b5b90bcd6",
     "original_commit_id": "e5bd3914e2e596debea16f433f57875b5b90bcd6", "user": ALICE,
     "body": "Width 0 is valid (a collapsed widget).", "created_at": "2024-03-03T09:30:00Z",
     "author_association": "CONTRIBUTOR", "line": 42, "original_line": 42, "side": "RIGHT", "in_reply_to_id": 1515000001},
]
# StarCoder2 §5.2 for one head: first block, diff hunks, then comments/reviews/review comments in time order,
# the closing block of a merged PR
PR_TEXT = "\n".join([
    "<pr>Title: Reject non-positive heights in Widget.__init__\n"
    "username_0: Fixes #1347.\r\n\r\nA height of 0 made `resize()` divide by zero; `__init__` now raises ValueError.",
    "<pr_status>opened",
    "<repo_name>octo-org/widgets",
    "<pr_diff>",
    "<pr_file>widgets/core.py",
    "<pr_diff_hunk>" + FILES[0]["patch"].rstrip("\n"),
    "<pr_review>username_1: ",
    "<pr_event_id>1912345601",
    "<pr_review_state>commented",
    "<pr_review_comment>",
    "<pr_event_id>1515000001",
    "<pr_in_reply_to_review_id>1912345601",
    "<pr_file>widgets/core.py",
    "<pr_diff_hunk_comment_line>42",
    "<pr_diff_hunk>" + REVIEW_COMMENTS[0]["diff_hunk"],
    "<pr_comment>username_1: Should `username_0` also check the width here?",
    "<pr_review_comment>",
    "<pr_event_id>1515000002",
    "<pr_in_reply_to_review_id>1912345603",
    "<pr_in_reply_to_comment_id>1515000001",
    "<pr_file>widgets/core.py",
    "<pr_diff_hunk_comment_line>42",
    "<pr_diff_hunk>" + REVIEW_COMMENTS[1]["diff_hunk"],
    "<pr_comment>username_0: Width 0 is valid (a collapsed widget).",
    "<pr_review>username_1: LGTM, thanks!",
    "<pr_event_id>1912345602",
    "<pr_review_state>approved",
    "<pr>username_1",
    "<pr_status>closed",
    "<pr_is_merged>True",
])


def test_pull_request_format():
    text = github.format_pull_request(PULL, PR_COMMENTS, REVIEWS, REVIEW_COMMENTS, FILES, "octo-org/widgets")
    assert text == PR_TEXT
    for tok in ("<pr>", "<pr_status>", "<pr_is_merged>", "<pr_diff>", "<pr_diff_hunk>", "<pr_review_comment>",
                "<pr_in_reply_to_comment_id>", "<pr_diff_hunk_comment_line>"):
        assert tok in STARCODER2_SPECIAL_TOKENS


@pytest.mark.parametrize("change,reason", [
    ({"user": user("dependabot[bot]", 49699333, "Bot")}, "bot_pull_request"),
    ({"title": "Bump urllib3 dependency to 2.2.1"}, "pr_title_filter"),
    ({"title": "v2.3.1"}, "pr_title_filter"),
    ({"body": "fix"}, "pr_description_filter"),
    ({"merged": False, "merged_at": None, "merged_by": None}, "pr_not_approved_or_merged"),
])
def test_pull_request_filters(change, reason):
    reviews = REVIEWS[:1] if reason == "pr_not_approved_or_merged" else REVIEWS
    with pytest.raises(github.ThreadDropped, match=reason):
        github.format_pull_request(dict(PULL, **change), PR_COMMENTS, reviews, REVIEW_COMMENTS, FILES, "o/r")
    with pytest.raises(github.ThreadDropped, match="pr_no_diff"):
        github.format_pull_request(PULL, [], REVIEWS, [], [dict(FILES[0], patch=None)], "o/r")


def test_open_approved_pr_has_no_closing_block_and_long_hunks_are_cut():
    pr = dict(PULL, state="open", merged=False, merged_at=None, merged_by=None, closed_at=None)
    rc = copy.deepcopy(REVIEW_COMMENTS[:1])
    rc[0]["diff_hunk"] = "@@ -1,3 +1,3 @@\n" + "+x = 1\n" * 2000  # > 10,000 characters
    text = github.format_pull_request(pr, [], REVIEWS, rc, FILES, "o/r")
    assert "<pr_status>closed" not in text and "<pr_is_merged>" not in text
    assert text.count("<pr_diff_hunk>") == 1  # the file's hunk only; the review comment keeps file + comment
    assert "<pr_file>widgets/core.py\n<pr_diff_hunk_comment_line>42\n<pr_comment>username_1:" in text


def test_thread_files():
    kind, text = github.format_thread(json.dumps({"issue": ISSUE, "comments": COMMENTS}), "octo-org/widgets")
    assert (kind, text) == ("issue", ISSUE_TEXT)
    for bad, reason in [("{", "corrupt_github_json"), ("[]", "not_github_thread"), ('{"issue": 3}', "not_github_thread"),
                        ('{"issue": {}, "comments": {"a": 1}}', "not_github_thread")]:
        with pytest.raises(github.ThreadDropped, match=reason):
            github.format_thread(bad, "o/r")


def test_curation_of_a_repository_github_folder(tmp_path):
    repo = tmp_path / "src" / "octo-org__widgets"  # a folder of repositories, The Stack's owner__name
    (repo / "widgets").mkdir(parents=True)
    (repo / "widgets" / "core.py").write_text("class Widget:\n    def __init__(self, width, height):\n"
                                              "        self.width = width\n        self.height = height\n")
    api = repo / ".github-api"
    (api / "issues").mkdir(parents=True)
    (api / "pulls").mkdir()
    mail = {"id": 1973310006, "user": CAROL, "created_at": "2024-03-06T08:00:00Z", "author_association": "NONE",
            "body": "If you need a reproducer, write to carol.kowalski@posteo.de and I'll send the notebook."}
    (api / "issues" / "1347.json").write_text(json.dumps({"issue": ISSUE, "comments": COMMENTS + [mail]}, indent=2))
    (api / "issues" / "1350.json").write_text(json.dumps({"issue": dict(ISSUE, body="Crash.", number=1350),
                                                          "comments": []}))
    (api / "pulls" / "1348.json").write_text(json.dumps({"pull_request": PULL, "comments": PR_COMMENTS,
                                                         "reviews": REVIEWS, "review_comments": REVIEW_COMMENTS,
                                                         "files": FILES}))
    (api / "pulls" / "1349.json").write_text(json.dumps({"pull_request": dict(PULL, user=user("renovate[bot]", 2, "Bot")),
                                                         "files": FILES}))
    (api / "notes.json").write_text('{"todo": ["triage"]}')
    out = tmp_path / "out"
    assert main(["code", "curate", str(tmp_path / "src"), "-o", str(out), "--no-humaneval", "--mbpp", "none"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["files_in"] == 6 and stats["derived_records"] == 0
    assert stats["files_in"] == stats["files_out"] + sum(stats["dropped"].values())
    assert stats["dropped_by_step"]["sources"] == {"issue_too_short": 1, "bot_pull_request": 1, "not_github_thread": 1}
    assert stats["sources"]["github_threads_in"] == 5
    data = {r["kind"]: r for r in pq.read_table(out / "data").to_pylist()}
    assert set(data) == {"file", "issue", "pull_request"}
    # PII redaction applies to threads too: the e-mail address in the last comment is gone
    assert data["issue"]["content"] == ISSUE_TEXT + "<issue_comment>username_2: If you need a reproducer, write " \
                                                    "to <EMAIL> and I'll send the notebook."
    assert data["issue"]["language"] == "GitHub Issues" and data["issue"]["n_redactions"] == 1
    assert data["pull_request"]["content"] == PR_TEXT and data["pull_request"]["path"] == ".github-api/pulls/1348.json"
    assert stats["kinds"]["issue"]["files"] == 1 and stats["kinds"]["pull_request"]["files"] == 1


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_threads_committed_in_a_git_repository(tmp_path):
    repo = tmp_path / "widgets"
    (repo / ".github-api" / "issues").mkdir(parents=True)
    (repo / "README.md").write_text("# widgets\n\nResizable widgets for terminal user interfaces.\n")
    (repo / ".github-api" / "issues" / "1347.json").write_text(json.dumps({"issue": ISSUE, "comments": COMMENTS}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["remote", "add", "origin", "https://github.com/octo-org/widgets.git"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "init"], check=True)
    (repo / ".github-api" / "issues" / "1400.json").write_text("{}")  # not committed: not read
    out = tmp_path / "out"
    assert main(["code", "curate", str(repo), "-o", str(out), "--no-humaneval", "--mbpp", "none"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["files_in"] == 2 and stats["sources"]["github_threads_in"] == 1
    data = {r["kind"]: r for r in pq.read_table(out / "data").to_pylist()}
    assert data["issue"]["content"] == ISSUE_TEXT and data["issue"]["repo_name"] == "octo-org/widgets"
    assert data["issue"]["commit"] is not None
