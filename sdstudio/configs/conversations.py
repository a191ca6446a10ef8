"""The conversations job's config: multi-turn chats per topic, a simulated user and an assistant taking turns.

Re-exported by ``sdstudio.config``'s registry lookup (``load_config``): ``kind: conversations``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config import ModelSpec, RunSettings, StrictModel, blank_is_unset
from .workflow import StepModel

DEFAULT_USER_PROMPT = (
    "You play a person talking to an AI assistant about: {topic}. Write as that person would: one message, "
    "in the first person, natural and specific, asking for help or following up on what the assistant said. "
    "Never answer for the assistant, never say you are an AI, and reply with the message only.")


class ConversationJob(StrictModel):
    """Multi-turn conversations: for each topic, ``per_topic`` chats of ``turns`` user/assistant exchanges."""

    kind: Literal["conversations"] = "conversations"
    name: str | None = None
    topics: list[str] = Field(min_length=1)
    turns: int = Field(3, ge=1, le=50)  # user messages per conversation, each answered by the assistant
    per_topic: int = Field(1, ge=1, le=10_000)
    # the assistant's system prompt: sent with every assistant turn and kept as the conversation's first message
    system_prompt: str | None = None
    # how the user simulator plays its part; ``{topic}`` is replaced by the conversation's topic
    user_prompt: str = DEFAULT_USER_PROMPT
    user_model: StepModel | None = None  # None: the assistant's model plays the user too
    model: ModelSpec = Field(default_factory=ModelSpec)
    run: RunSettings = Field(default_factory=RunSettings)

    _blank = field_validator("name", "system_prompt", mode="before")(blank_is_unset)

    @field_validator("topics")
    @classmethod
    def _topics_not_blank(cls, value: list[str]) -> list[str]:
        value = list(dict.fromkeys(t.strip() for t in value if t and t.strip()))  # a repeat adds nothing
        if not value:
            raise ValueError("the topic list is empty; give at least one topic")
        return value

    @field_validator("user_prompt")
    @classmethod
    def _user_prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("user_prompt is blank; describe the user the simulator plays (or leave it out)")
        return value

    @model_validator(mode="after")
    def _runs_here(self) -> "ConversationJob":
        from ..config import LOCAL_EXECUTOR

        if self.run.executor != LOCAL_EXECUTOR:
            raise ValueError(f"conversations run on the local executor only (each turn waits for the one before "
                             f"it), not {self.run.executor}; drop --executor")
        return self

    @property
    def user_spec(self) -> ModelSpec:
        """The model that plays the user: ``user_model``'s changes over the assistant's model."""
        return self.user_model.resolve(self.model) if self.user_model is not None else self.model
