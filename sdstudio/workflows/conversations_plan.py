"""What a conversations job will ask, decided before any call: its chats, and each turn's request.

A conversation alternates a simulated user and the assistant: message 0 is the user's opening, message 1 the
assistant's answer, and so on, ``2 x turns`` messages in all, each one request. The request for message ``n``
depends only on the topic, the copy number and messages ``0..n-1``, so a resumed run rebuilds the very same
requests (and keys) for the messages it has and asks only for the next one.

The assistant sees the conversation as a chat (its system prompt, then user/assistant turns). The user simulator
sees it the other way round, as a transcript in one message under its own system prompt ("you play a person
asking about <topic>"): every provider takes that shape (Bedrock wants a user message first and roles that
alternate), and the simulator never mistakes itself for the assistant.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ModelSpec
from ..diagnostics import cut_off, explain
from ..engine import InvalidOutput
from ..providers import ChatRequest, Completion
from .fields import transcript
from .jobs import Estimate

USER, ASSISTANT = "user", "assistant"
# a simulator that labels its message ("User: ...", "**You:** ...") gets the label taken off
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:user|you|me|human|customer)(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.IGNORECASE)
MESSAGE_TOKENS = 200  # the preview's guess of one message's length (capped by max_tokens)


@dataclass(frozen=True)
class Chat:
    """One conversation to make: a topic and a copy number (``per_topic`` copies per topic)."""

    key: str  # the record's item key
    topic: str
    copy: int


def role_of(index: int) -> str:
    """Message ``index``'s role: the user opens, the assistant answers, and so on."""
    return USER if index % 2 == 0 else ASSISTANT


@dataclass(frozen=True)
class ConversationPlan:
    config: Any  # ConversationJob
    chats: list[Chat]

    @classmethod
    def build(cls, config: Any) -> ConversationPlan:
        chats = []
        for topic in config.topics:
            for copy in range(config.per_topic):
                digest = hashlib.sha256(f"conversation|{topic}|{copy}".encode()).hexdigest()[:24]
                chats.append(Chat(key=f"conv-{digest}", topic=topic, copy=copy))
        return cls(config, chats)

    @property
    def messages_per_chat(self) -> int:
        return 2 * self.config.turns

    def spec(self, index: int) -> ModelSpec:
        return self.config.user_spec if role_of(index) == USER else self.config.model

    # -- requests ----------------------------------------------------------------------------------
    def request(self, chat: Chat, messages: list[dict[str, Any]]) -> ChatRequest:
        """The request for the message after ``messages`` (the user's when their count is even)."""
        if role_of(len(messages)) == USER:
            return ChatRequest.of(self.user_messages(chat, messages), self.config.user_spec.parameters)
        system = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        return ChatRequest.of(system + [{"role": m["role"], "content": m["content"]} for m in messages],
                              self.config.model.parameters)

    def user_messages(self, chat: Chat, messages: list[dict[str, Any]]) -> list[dict[str, str]]:
        system = self.config.user_prompt.replace("{topic}", chat.topic)
        if not messages:
            ask = f"Topic: {chat.topic}\n\nWrite your first message to the assistant."
            if self.config.per_topic > 1:  # copies of one topic would otherwise open alike
                ask += (f" This is conversation {chat.copy + 1} of {self.config.per_topic} about this topic: "
                        "take an angle of your own.")
        else:
            shown = transcript(messages, {USER: "You", ASSISTANT: "Assistant"})
            ask = (f"Topic: {chat.topic}\n\nThe conversation so far:\n\n{shown}\n\n"
                   "Write your next message to the assistant.")
        return [{"role": "system", "content": system}, {"role": "user", "content": ask}]

    # -- replies -----------------------------------------------------------------------------------
    @staticmethod
    def parse(role: str, completion: Completion, max_tokens: int | None) -> str:
        """The message a reply holds; an empty or cut-off reply is asked again (``InvalidOutput``)."""
        text = completion.text.strip()
        if role == USER:
            text = _LABEL.sub("", text, count=1).strip().strip('"').strip()
        if not text:
            raise InvalidOutput(explain(f"the {role} turn's reply is empty", completion.finish_reason, max_tokens))
        if cut_off(completion.finish_reason):
            raise InvalidOutput(explain(f"the {role} turn's reply is incomplete", completion.finish_reason,
                                        max_tokens))
        return text

    def metadata(self, model_ids: dict[str, str]) -> dict[str, Any]:
        """The generation_metadata fields that describe what was asked."""
        spec, user = self.config.model, self.config.user_spec
        template = (f"# assistant system prompt\n{self.config.system_prompt or '(none)'}\n\n"
                    f"# user simulator ({user.provider} {model_ids.get(USER, '')})\n{self.config.user_prompt}")
        return {"technique": "conversation", "use_case": None,
                "model_id": ", ".join(dict.fromkeys(model_ids[r] for r in (ASSISTANT, USER))),
                "inference_type": ", ".join(dict.fromkeys((spec.provider, user.provider))),
                "model_parameters": spec.parameters.model_dump(mode="json"), "prompt_template": template,
                "topics": list(self.config.topics), "num_per_topic": self.config.per_topic,
                "requested": len(self.chats)}


# -- dry run ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConversationPreview(Estimate):
    """What a conversations job will send, without a call: the first requests and the estimate."""

    prompt: str           # the user simulator's first request and the assistant's system prompt, as text
    prompt_tokens: int
    conversations: int
    messages: int          # per conversation (2 x turns)
    requests: int


def preview(config: Any, *, home: str | Path | None = None) -> ConversationPreview:
    """The user simulator's first prompt, the assistant's first request, and a token/cost estimate. A message's
    length is guessed (``MESSAGE_TOKENS``, capped by max_tokens); each request carries the conversation so far."""
    from ..pricing import price_for
    from ..providers import get_provider
    from ..tokens import count_tokens

    plan = ConversationPlan.build(config)
    first = plan.chats[0]
    opening = plan.user_messages(first, [])
    shown = "\n\n".join(f"### {m['role']} (user simulator)\n{m['content']}" for m in opening)
    if config.system_prompt:
        shown += f"\n\n### system (assistant)\n{config.system_prompt}"
    prompt_tokens = count_tokens("\n".join(m["content"] for m in opening), config.user_spec)[0]
    system_tokens = count_tokens(config.system_prompt or "", config.model)[0]
    tokens_in = tokens_out = 0
    cost = 0.0
    known = True
    prices = {}
    for role in (USER, ASSISTANT):
        spec = config.user_spec if role == USER else config.model
        prices[role] = price_for(get_provider(spec).model_id, Path(home).expanduser() if home else None)
    for index in range(plan.messages_per_chat):
        role = role_of(index)
        spec = plan.spec(index)
        out = min(MESSAGE_TOKENS, spec.parameters.max_tokens)
        history = sum(min(MESSAGE_TOKENS, plan.spec(i).parameters.max_tokens) for i in range(index))
        into = history + (prompt_tokens if role == USER else system_tokens)
        tokens_in += into * len(plan.chats)
        tokens_out += out * len(plan.chats)
        cost += prices[role].cost(into, out) * len(plan.chats)
        known = known and prices[role].known
    return ConversationPreview(prompt=shown, prompt_tokens=prompt_tokens, conversations=len(plan.chats),
                               messages=plan.messages_per_chat, requests=len(plan.chats) * plan.messages_per_chat,
                               est_tokens_in=tokens_in, est_tokens_out=tokens_out, est_cost_usd=cost,
                               price_known=known)
