"""The hub's commands to a kiosk, each answered `(ok, detail)`; DeviceClient turns that into `command.result`.

    reload-content                     fetch and apply the last content announcement again (even if already seen)
    restart                            leave with exit code 75; the service manager starts the kiosk again
    set-language language=en           the language visits start in (one of the pack's), until the next restart
    set-idle-timeout seconds=120       seconds without a touch before "Are you still there?" (15-3600)
    screenshot                         a PNG of the screen, sent to the site server (not in the event stream)

`handle` runs on the bus worker thread. The controller belongs to the UI thread, so it is reached only through
`ui_call`, waiting (with a timeout) for the answer the result needs. A bad command is a clear refusal in its
result, never an exception.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from kiosk.controller import KioskController
from kiosk.settings import IDLE_TIMEOUT_RANGE
from protocol.messages import Command

log = logging.getLogger(__name__)

T = TypeVar("T")
UiCall = Callable[[Callable[[], None]], None]

RESTART_EXIT_CODE = 75
"""EX_TEMPFAIL: "try again". The systemd unit restarts the kiosk on it (Restart=on-failure)."""
UI_TIMEOUT_S = 5.0
SCREENSHOT_TIMEOUT_S = 10.0
COMMANDS = ("reload-content", "restart", "set-language", "set-idle-timeout", "screenshot")


class UiTimeout(Exception):
    pass


class KioskCommands:
    def __init__(self, *, controller: KioskController, ui_call: UiCall,
                 reload_content: Callable[[], tuple[bool, str]], request_exit: Callable[[int], None],
                 capture_png: Callable[[], bytes] | None = None,
                 send_screenshot: Callable[[str, bytes], None] | None = None,
                 ui_timeout_s: float = UI_TIMEOUT_S, screenshot_timeout_s: float = SCREENSHOT_TIMEOUT_S) -> None:
        self._controller = controller
        self._ui_call = ui_call
        self._reload_content = reload_content
        self._request_exit = request_exit
        self._capture_png = capture_png
        self._send_screenshot = send_screenshot
        self._ui_timeout_s = ui_timeout_s
        self._screenshot_timeout_s = screenshot_timeout_s

    def handle(self, command: Command) -> tuple[bool, str]:
        handler = {
            "reload-content": self._reload, "restart": self._restart, "set-language": self._set_language,
            "set-idle-timeout": self._set_idle_timeout, "screenshot": self._screenshot,
        }.get(command.name)
        if handler is None:
            return False, f"unknown command {command.name!r}; a kiosk knows {', '.join(COMMANDS)}"
        try:
            return handler(command)
        except UiTimeout as error:
            return False, str(error)

    # --- the commands -------------------------------------------------------------------------------------

    def _reload(self, command: Command) -> tuple[bool, str]:
        if unexpected := _unexpected(command, ()):
            return False, unexpected
        return self._reload_content()

    def _restart(self, command: Command) -> tuple[bool, str]:
        if unexpected := _unexpected(command, ()):
            return False, unexpected
        self._request_exit(RESTART_EXIT_CODE)
        return True, f"restarting (exit code {RESTART_EXIT_CODE}; the service manager starts the kiosk again)"

    def _set_language(self, command: Command) -> tuple[bool, str]:
        if unexpected := _unexpected(command, ("language",)):
            return False, unexpected
        language = command.args.get("language")
        if not isinstance(language, str):
            return False, "set-language needs language=<code>, one of the pack's languages (e.g. language=en)"
        controller = self._controller
        ok, languages = self._on_ui(lambda: (controller.set_default_language(language), controller.view.languages),
                                    self._ui_timeout_s)
        if not ok:
            return False, f"language {language!r} is not in the content pack shown ({', '.join(languages)})"
        return True, f"visits now start in {language} (until the kiosk restarts; set default_language in [kiosk] " \
                     "to keep it)"

    def _set_idle_timeout(self, command: Command) -> tuple[bool, str]:
        if unexpected := _unexpected(command, ("seconds",)):
            return False, unexpected
        seconds = command.args.get("seconds")
        low, high = IDLE_TIMEOUT_RANGE
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not low <= seconds <= high:
            return False, f"set-idle-timeout needs seconds=<number> from {low:g} to {high:g}, got {seconds!r}"
        controller = self._controller
        if not self._on_ui(lambda: controller.set_idle_timeout(seconds), self._ui_timeout_s):
            return False, f"the kiosk refused idle timeout {seconds!r}"
        return True, f"idle timeout is now {seconds:g} s (until the kiosk restarts; set idle_timeout_s in " \
                     "[kiosk] to keep it)"

    def _screenshot(self, command: Command) -> tuple[bool, str]:
        if unexpected := _unexpected(command, ()):
            return False, unexpected
        capture, send = self._capture_png, self._send_screenshot
        if capture is None:
            return False, "this kiosk runs without a screen: nothing to capture"
        if send is None:
            return False, "this kiosk's software cannot send screenshots"
        png = self._on_ui(capture, self._screenshot_timeout_s)
        if not isinstance(png, bytes | bytearray) or not png:
            return False, "the screen capture gave no image"
        try:
            send(command.command_id, bytes(png))
        except (ValueError, ConnectionError) as error:  # too large for a message, or no broker right now
            return False, f"screenshot not sent: {error}"
        return True, f"screenshot sent ({len(png)} bytes)"

    # --- running on the UI thread -------------------------------------------------------------------------

    def _on_ui(self, function: Callable[[], T], timeout: float) -> T:
        """`function()` run on the UI thread; its result, or its exception raised here. UiTimeout if the UI does
        not run it in time (then it may still run later)."""
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = function()
            except BaseException as error:  # carried to the waiting thread, which reports it
                outcome["error"] = error
            finally:
                done.set()

        self._ui_call(run)
        if not done.wait(timeout):
            raise UiTimeout(f"the kiosk's screen did not answer within {timeout:g} s")
        if "error" in outcome:
            raise outcome["error"]
        result: T = outcome["result"]
        return result


def _unexpected(command: Command, allowed: tuple[str, ...]) -> str | None:
    extra = sorted(set(command.args) - set(allowed))
    if not extra:
        return None
    takes = f"takes only {', '.join(allowed)}" if allowed else "takes no arguments"
    return f"{command.name} {takes}; got {', '.join(extra)}"


__all__ = ["COMMANDS", "RESTART_EXIT_CODE", "KioskCommands", "UiCall", "UiTimeout"]
