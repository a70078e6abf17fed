"""The command line's network policy: fail in seconds, not after a minute of retries, and in one line.

Library calls download what they need and raise; the CLI decides how a missing network looks to
a user. When the Hugging Face Hub does not answer a HEAD request within a few seconds, the
command switches this process to offline mode, so datasets and weights come from the cache at
once or fail at once, and any network failure prints what failed and what to do instead.
huggingface_hub is imported by the functions that use it, so `--help` never pays for it.
"""
from __future__ import annotations

import os
import sys

PROBE_TIMEOUT_S = 3.0
# Exception classes of the HTTP stacks under huggingface_hub and datasets (requests, httpx and
# the copy huggingface_hub vendors), matched by module and name so no version's import can fail.
_HTTP_MODULES = ("requests", "httpx", "httpx2", "urllib3", "aiohttp", "fsspec")
_HTTP_ERROR_NAMES = ("HTTPError", "RequestError", "TransportError", "ConnectionError", "RequestException",
                     "TimeoutException", "ClientError")


def is_network_error(error: BaseException) -> bool:
    """A failure to reach a server (no connection, DNS, timeout, refused, offline mode, HTTP error)."""
    hub_errors = sys.modules.get("huggingface_hub.errors")  # not imported: the error cannot be one of its
    hub_http = (hub_errors.HfHubHTTPError,) if hub_errors is not None else ()
    if isinstance(error, (ConnectionError, TimeoutError, *hub_http)):
        return True
    return any(cls.__module__.split(".")[0] in _HTTP_MODULES and cls.__name__ in _HTTP_ERROR_NAMES
               for cls in type(error).__mro__)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the Hub answers at all within `timeout` seconds (False in offline mode)."""
    import huggingface_hub
    import huggingface_hub.constants

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    try:
        huggingface_hub.get_session().head(huggingface_hub.constants.ENDPOINT, timeout=timeout)
    except Exception:  # any failure to get an answer means: unreachable
        return False
    return True


def offline_unless_reachable() -> bool:
    """Put this CLI process in Hugging Face offline mode when the Hub is unreachable; True if offline."""
    import huggingface_hub.constants

    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:  # already imported: it read the environment then
        datasets_config.HF_HUB_OFFLINE = True
    return True


def network_message(error: BaseException, hint: str | None) -> str:
    """One line: what could not be reached, and how to go on without it."""
    import huggingface_hub.constants

    what = " ".join(str(error).split()) or type(error).__name__
    todo = hint or (f"check the connection and retry, or work from the Hugging Face cache "
                    f"({huggingface_hub.constants.HF_HUB_CACHE}) and local copies with HF_HUB_OFFLINE=1")
    return f"network: {what} ({type(error).__name__}). To go on: {todo}"
