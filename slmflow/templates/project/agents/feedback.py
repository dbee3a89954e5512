"""The project's skills: what each step asks the small model, and what counts as an answer."""

from __future__ import annotations

from slmflow import Label, Skill

__all__ = ["classify_feedback"]

classify_feedback = Skill(
    name="classify_feedback",
    description="Sort a customer's message into praise, complaint or question.",
    instructions=(
        "You sort customer messages. Answer with one label: praise (the customer is happy), "
        "complaint (something went wrong), question (the customer asks something)."
    ),
    prompt="Message: {text}",
    output=Label(labels=("praise", "complaint", "question")),
    # A hand-set floor to start with. Once you have labelled examples, calibrate one instead
    # (`slmflow calibrate`) and set `target_precision`: then an answer is kept only when the
    # calibration vouches for it, and escalates (or goes to review) otherwise.
    min_confidence=0.8,
)
