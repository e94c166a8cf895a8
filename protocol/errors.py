"""The one exception type for anything that breaks the contract."""

from __future__ import annotations


class ContractError(ValueError):
    """Input that does not follow the contract.

    `code` is a short stable category (counted and grouped on by the hub); `detail` says precisely what is wrong
    and where. `event_id` is set when the offending event's id could be read, so a sender can be told which
    event was refused.
    """

    def __init__(self, code: str, detail: str, *, event_id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.event_id = event_id
