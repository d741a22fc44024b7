"""What the tool knows of Cloudflare's models: the catalog, token counts, languages and metering."""
