"""The project's tools: what a step may do to the world, with its arguments' schema."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import tool

__all__ = ["file_note"]


@tool
def file_note(category: str, text: str) -> dict[str, Any]:
    """File a customer's message under a category (here: echo it; call your ticketing system instead)."""
    return {"filed": category, "chars": len(text)}
