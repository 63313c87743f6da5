"""The special tokens of the code tokenizer, in vocabulary order (ids 0..37).

The first 34 are StarCoder2's, in StarCoder2's order, so a model trained here lines up token for token
with tools written for StarCoder2 (FIM prompts, repository context, Jupyter / PR formats). The last
four are the PII placeholders the curation step writes into the corpus; they are added as ordinary
(non-special) added tokens: always one token, kept by `decode(..., skip_special_tokens=True)`.
"""

from __future__ import annotations

EOS = "<|endoftext|>"
FIM_PREFIX = "<fim_prefix>"
FIM_MIDDLE = "<fim_middle>"
FIM_SUFFIX = "<fim_suffix>"
FIM_PAD = "<fim_pad>"
REPO_NAME = "<repo_name>"
FILE_SEP = "<file_sep>"

STARCODER2_SPECIAL_TOKENS: list[str] = [
    EOS, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, REPO_NAME, FILE_SEP,
    "<issue_start>", "<issue_comment>", "<issue_closed>",
    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>", "<jupyter_script>",
    "<empty_output>", "<code_to_intermediate>", "<intermediate_to_code>",
    "<pr>", "<pr_status>", "<pr_is_merged>", "<pr_base>", "<pr_file>", "<pr_base_code>", "<pr_diff>",
    "<pr_diff_hunk>", "<pr_comment>", "<pr_event_id>", "<pr_review>", "<pr_review_state>",
    "<pr_review_comment>", "<pr_in_reply_to_review_id>", "<pr_in_reply_to_comment_id>",
    "<pr_diff_hunk_comment_line>",
]
PII_TOKENS: list[str] = ["<NAME>", "<EMAIL>", "<KEY>", "<PASSWORD>"]

# the whole list, in vocabulary order: token SPECIAL_TOKENS[i] has id i
SPECIAL_TOKENS: list[str] = STARCODER2_SPECIAL_TOKENS + PII_TOKENS
