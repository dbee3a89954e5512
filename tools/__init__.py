"""The support_triage project's tools: lookups and writes over the shop database."""
