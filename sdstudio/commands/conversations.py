"""``sdstudio conversations``: multi-turn chats per topic, a simulated user and an assistant taking turns."""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from .common import add_model_flags, apply_overrides, build_config, load_job_data, run_with_progress, show_preview


def register(sub: argparse._SubParsersAction) -> None:
    conv = sub.add_parser("conversations", help="multi-turn conversations: a simulated user and the assistant "
                                                "take turns on each topic")
    add_model_flags(conv)
    topics = conv.add_mutually_exclusive_group()
    topics.add_argument("--topics", nargs="+", metavar="TOPIC")
    topics.add_argument("--topics-file", help="JSON list, or one topic per line")
    conv.add_argument("--turns", type=int, metavar="N", help="user messages per conversation, each answered "
                                                             "(default 3)")
    conv.add_argument("--per-topic", type=int, metavar="K", help="conversations per topic (default 1)")
    conv.add_argument("--system-prompt", metavar="S", help="the assistant's system prompt (kept as the first "
                                                           "message)")
    conv.add_argument("--user-prompt", metavar="P", help="how the user simulator plays its part ({topic} is "
                                                         "replaced by the topic)")
    conv.add_argument("--user-provider", help="the user simulator's provider (default: the assistant's)")
    conv.add_argument("--user-model", help="the user simulator's model (default: the assistant's)")
    conv.add_argument("--user-base-url", help="the user simulator's endpoint (default: the assistant's)")
    conv.add_argument("--resume", type=int, metavar="JOB_ID", help="continue a killed or cancelled job")
    conv.add_argument("--dry-run", action="store_true", help="show the first prompts and the estimate; no call")
    conv.set_defaults(handler=run)


def job_config(args: argparse.Namespace):
    """The ConversationJob these flags (and ``--config``, or the resumed job's config) describe."""
    from ..configs.conversations import ConversationJob

    data = load_job_data(args, "conversations", "generation")
    if args.topics_file:
        from .generate import read_topics

        data["topics"] = read_topics(args.topics_file)
    for flag, key in (("topics", "topics"), ("turns", "turns"), ("per_topic", "per_topic"),
                      ("system_prompt", "system_prompt"), ("user_prompt", "user_prompt")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    user = {key: getattr(args, flag) for flag, key in (("user_provider", "provider"), ("user_model", "model"),
                                                       ("user_base_url", "base_url"))
            if getattr(args, flag) is not None}
    if user:
        data["user_model"] = {**(data.get("user_model") or {}), **user}
    if not data.get("topics"):
        raise ConfigError("give --topics T1 T2 ... or --topics-file FILE (or a --config with topics)")
    return build_config(ConversationJob, apply_overrides(data, args), args.config or "conversations flags", args)


def run(args: argparse.Namespace) -> int:
    from ..workflows.conversations import ConversationRun, preview

    config = job_config(args)
    if args.dry_run:
        shown = preview(config, home=args.home)
        return show_preview(shown, args, "first user-simulator prompt",
                            f"{shown.conversations} conversations x {shown.messages} messages = {shown.requests} "
                            "requests")
    return run_with_progress(ConversationRun(config, home=args.home), args, config.run.max_failed_ratio)
