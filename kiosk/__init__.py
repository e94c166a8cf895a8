"""The kiosk role: the touch app visitors use in a gallery, fed by content packs from the site.

So far: fetching packs (`kiosk.pack_download`, over `bus.https`), keeping them on the
kiosk (`kiosk.pack_store`) and deciding when to fetch and install one (`kiosk.pack_updates`). Imports
`protocol`, `bus` and `content` only, never another role."""
