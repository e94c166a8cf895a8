"""Museum content every role reads: the model (`content.model`), content folders (`content.source`) and the
packs built from them (`content.pack`). Standard library only, so a kiosk, the companion service and staff tools
can all depend on it; it imports `protocol` and nothing else of ours."""
