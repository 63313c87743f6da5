"""Stop strings checked during generation: a row stops as soon as its new text contains one."""

from __future__ import annotations

from typing import Any

from domainfm.core.errors import require


def stop_criteria(tokenizer: Any, stop: list[str], prompt_width: int) -> Any:
    """A `StoppingCriteriaList` that marks each row done once its generated text holds a stop string.

    Only the generated part (after `prompt_width`) is decoded, and only its tail: a stop string of n
    characters spans at most n + 1 tokens (plus a few for multi-byte characters split over tokens).
    """
    transformers = require("transformers", "code")
    torch = require("torch", "code")
    stops = [s for s in stop if s]
    tail = max(len(s) for s in stops) + 4

    class StopOnStrings(transformers.StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            # input_ids: (B, prompt_width + generated so far) -> (B,) bool, True = this row is finished
            new = input_ids[:, prompt_width:]
            done = [any(s in tokenizer.decode(row[-tail:], skip_special_tokens=False) for s in stops)
                    for row in new.tolist()]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return transformers.StoppingCriteriaList([StopOnStrings()])
