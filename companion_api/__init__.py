"""The companion service: phone pages, take-home visits and the sites' upstream sync, on SQLite or PostgreSQL."""
