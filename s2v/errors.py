"""The two kinds of message s2v gives its users.

`S2VError` is raised for anything the user can fix (a bad input, a missing model, an
impossible setting); the CLI and the app print its text as is, never a traceback.
`S2VWarning` marks something that went on in a degraded way (e.g. background removal
skipped), so callers can surface it with `warnings.catch_warnings`.
"""


class S2VError(ValueError):
    """A problem the user can act on; its message says what to do."""


class S2VWarning(UserWarning):
    """Work went on, but not quite as asked; the message says what changed."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception's first line, cut to `limit` characters (its type's name when it has no text): the part
    of a library's message worth putting in ours."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:limit]


def missing_model_message(model: str, local: bool, error: Exception, flag: str = "--model") -> str:
    """What to do when a model is neither a loadable folder nor in reach on the Hub; `flag` takes a local copy."""
    from huggingface_hub.constants import HF_HUB_CACHE

    reason = first_line(error, limit=300)
    if local:
        return f"Could not load the model folder {model}: {reason}"
    return (
        f"Could not load '{model}': it is not in the Hugging Face cache ({HF_HUB_CACHE}) and the Hub could "
        f"not provide it ({reason}). On a machine with internet it downloads on first use; otherwise "
        f"download it elsewhere (`hf download {model} --local-dir ./{model.split('/')[-1]}`) and pass "
        f"{flag} ./{model.split('/')[-1]}."
    )
