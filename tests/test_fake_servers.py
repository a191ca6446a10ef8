"""The fake servers speak real servers' structured-output dialects, with the statuses and error bodies those
servers send: each flavor of the fake OpenAI-compatible server, and Bedrock Converse's toolConfig."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import jsonschema
import pytest

from tests.fakes.bedrock_server import FakeBedrockServer
from tests.fakes.openai_server import DEFAULT_FLAVOR, FakeOpenAIServer, requested_schema

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
MARKER = "Reply with JSON only (no prose, no code fences) that validates against this JSON schema:\n"
JSON_SCHEMA = {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}}
JSON_OBJECT = {"response_format": {"type": "json_object", "schema": SCHEMA}}
GUIDED_JSON = {"guided_json": SCHEMA}
NVEXT = {"nvext": {"guided_json": SCHEMA}}
TOOL = {"tools": [{"type": "function", "function": {"name": "output", "parameters": SCHEMA}}],
        "tool_choice": {"type": "function", "function": {"name": "output"}}}


def post(server: FakeOpenAIServer, fields: dict[str, Any], *, system: str = "Answer in JSON.",
         ) -> tuple[int, dict[str, Any]]:
    body = {"model": "fake-model", "messages": [{"role": "system", "content": system},
                                                {"role": "user", "content": "Describe a person."}], **fields}
    request = urllib.request.Request(f"{server.url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def content(reply: dict[str, Any]) -> str:
    return reply["choices"][0]["message"]["content"]


def follows_schema(text: str) -> bool:
    try:
        return jsonschema.Draft202012Validator(SCHEMA).is_valid(json.loads(text))
    except json.JSONDecodeError:
        return False


@pytest.fixture
def fake():
    """fake(flavor) -> a running FakeOpenAIServer of that flavor; all are stopped after the test."""
    servers: list[FakeOpenAIServer] = []

    def start(flavor: str) -> FakeOpenAIServer:
        server = FakeOpenAIServer(flavor=flavor)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- requested_schema ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [JSON_SCHEMA, JSON_OBJECT, GUIDED_JSON, NVEXT, TOOL],
                         ids=["json_schema", "json_object", "guided_json", "nvext", "tool"])
def test_requested_schema_finds_the_schema_in_every_dialect(fields):
    assert requested_schema({"messages": [], **fields}) == SCHEMA


def test_requested_schema_finds_the_schema_written_at_the_end_of_a_message():
    body = {"messages": [{"role": "system", "content": f"Be terse.\n\n{MARKER}{json.dumps(SCHEMA)}"},
                         {"role": "user", "content": "hi"}]}
    assert requested_schema(body) == SCHEMA


def test_requested_schema_is_none_for_a_plain_request():
    assert requested_schema({"messages": [{"role": "user", "content": "hi"}]}) is None


def test_default_flavor_is_llama_cpp_so_every_workflow_negotiates():
    assert DEFAULT_FLAVOR == "llama_cpp" and FakeOpenAIServer().flavor == "llama_cpp"


# -- lenient -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [JSON_SCHEMA, JSON_OBJECT, GUIDED_JSON, NVEXT],
                         ids=["json_schema", "json_object", "guided_json", "nvext"])
def test_lenient_follows_the_schema_in_every_dialect(fake, fields):
    status, reply = post(fake("lenient"), fields)
    assert status == 200 and follows_schema(content(reply))


# -- llama_cpp ---------------------------------------------------------------------------------------------------

def test_llama_cpp_answers_json_schema_with_its_500_validation_error(fake):
    server = fake("llama_cpp")
    status, reply = post(server, JSON_SCHEMA)
    assert status == 500
    assert set(reply) == {"error"} and reply["error"]["type"] == "internal_server_error"
    assert reply["error"]["param"] is None and reply["error"]["code"] is None
    message = reply["error"]["message"]
    assert message.startswith("1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
                              "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
                              "'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"")
    assert message.endswith("llama_cpp/server/app.py\", line 376, in create_chat_completion\n"
                            "    POST /v1/chat/completions")


def test_llama_cpp_rejected_request_is_recorded_but_not_answered(fake):
    server = fake("llama_cpp")
    post(server, JSON_SCHEMA)
    assert len(server.received) == 1 and len(server.rejected) == 1 and server.answered == [] and server.requests == []


def test_llama_cpp_follows_json_object_with_schema(fake):
    status, reply = post(fake("llama_cpp"), JSON_OBJECT)
    assert status == 200 and follows_schema(content(reply))


def test_llama_cpp_ignores_guided_json_and_answers_free_text(fake):
    status, reply = post(fake("llama_cpp"), GUIDED_JSON)
    assert status == 200 and content(reply).startswith("reply ")


def test_llama_cpp_ignores_nvext(fake):
    status, reply = post(fake("llama_cpp"), NVEXT)
    assert status == 200 and content(reply).startswith("reply ")


def test_llama_cpp_follows_a_schema_written_in_the_prompt(fake):
    status, reply = post(fake("llama_cpp"), GUIDED_JSON, system=f"Be terse.\n\n{MARKER}{json.dumps(SCHEMA)}")
    assert status == 200 and follows_schema(content(reply))


def test_llama_cpp_answers_a_forced_tool_with_a_tool_call(fake):
    status, reply = post(fake("llama_cpp"), TOOL)
    choice = reply["choices"][0]
    assert status == 200 and choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"] and call["function"]["name"] == "output"
    assert follows_schema(call["function"]["arguments"])


# -- openai ------------------------------------------------------------------------------------------------------

def test_openai_follows_json_schema(fake):
    status, reply = post(fake("openai"), JSON_SCHEMA)
    assert status == 200 and follows_schema(content(reply))


def test_openai_answers_json_object_with_a_json_object(fake):
    status, reply = post(fake("openai"), {"response_format": {"type": "json_object"}})
    assert status == 200 and isinstance(json.loads(content(reply)), dict)


def test_openai_refuses_json_object_when_no_message_says_json(fake):
    status, reply = post(fake("openai"), {"response_format": {"type": "json_object"}}, system="Be terse.")
    assert status == 400 and reply["error"]["param"] == "messages"


def test_openai_refuses_an_unknown_field_with_400(fake):
    server = fake("openai")
    status, reply = post(server, GUIDED_JSON)
    assert status == 400
    assert reply == {"error": {"message": "Unrecognized request argument supplied: guided_json",
                               "type": "invalid_request_error", "param": None, "code": None}}
    assert server.rejected and not server.answered


def test_openai_answers_a_forced_tool_with_a_tool_call(fake):
    status, reply = post(fake("openai"), TOOL)
    assert status == 200 and follows_schema(reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])


# -- vllm_legacy -------------------------------------------------------------------------------------------------

def test_vllm_legacy_refuses_json_schema_with_400(fake):
    status, reply = post(fake("vllm_legacy"), JSON_SCHEMA)
    assert status == 400
    assert reply == {"object": "error", "message": "1 validation error for ChatCompletionRequest\n"
                     "response_format.type\n  Input should be 'text' or 'json_object' [type=literal_error, "
                     "input_value='json_schema', input_type=str]", "type": "BadRequestError", "param": None,
                     "code": 400}


def test_vllm_legacy_ignores_the_schema_of_json_object(fake):
    status, reply = post(fake("vllm_legacy"), JSON_OBJECT)
    assert status == 200 and not follows_schema(content(reply))


def test_vllm_legacy_follows_guided_json(fake):
    status, reply = post(fake("vllm_legacy"), GUIDED_JSON)
    assert status == 200 and follows_schema(content(reply))


# -- nim ---------------------------------------------------------------------------------------------------------

def test_nim_refuses_json_schema_with_fastapi_422(fake):
    status, reply = post(fake("nim"), JSON_SCHEMA)
    assert status == 422
    assert reply == {"detail": [{"type": "literal_error", "loc": ["body", "response_format", "type"],
                                 "msg": "Input should be 'text' or 'json_object'", "input": "json_schema"}]}


def test_nim_follows_nvext_guided_json(fake):
    status, reply = post(fake("nim"), NVEXT)
    assert status == 200 and follows_schema(content(reply))


def test_nim_accepts_json_object_but_ignores_its_schema(fake):
    status, reply = post(fake("nim"), JSON_OBJECT)
    assert status == 200 and not follows_schema(content(reply))


def test_nim_ignores_top_level_guided_json(fake):
    status, reply = post(fake("nim"), GUIDED_JSON)
    assert status == 200 and content(reply).startswith("reply ")


# -- text_only ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [JSON_SCHEMA, JSON_OBJECT], ids=["json_schema", "json_object"])
def test_text_only_refuses_response_format_with_400(fake, fields):
    status, reply = post(fake("text_only"), fields)
    assert status == 400
    assert reply == {"error": {"message": "response_format is not supported by this model",
                               "type": "invalid_request_error", "param": "response_format", "code": None}}


def test_text_only_refuses_tools_with_400(fake):
    status, reply = post(fake("text_only"), TOOL)
    assert status == 400 and reply["error"]["param"] == "tools" and "tools" in reply["error"]["message"]


def test_text_only_refuses_an_unknown_field_with_400(fake):
    status, reply = post(fake("text_only"), NVEXT)
    assert status == 400 and reply["error"]["message"] == "Unrecognized request argument supplied: nvext"


def test_text_only_follows_a_schema_written_in_the_prompt(fake):
    status, reply = post(fake("text_only"), {}, system=f"{MARKER}{json.dumps(SCHEMA)}")
    assert status == 200 and follows_schema(content(reply))


# -- faults ------------------------------------------------------------------------------------------------------

def test_invalid_request_fault_answers_every_request_with_the_same_422():
    server = FakeOpenAIServer(fault_rates={"invalid_request": 1.0})
    with server:
        replies = [post(server, {}) for _ in range(3)]
    expected = {"detail": [{"type": "extra_forbidden", "loc": ["body", "logit_bias"],
                            "msg": "Extra inputs are not permitted"}]}
    assert replies == [(422, expected)] * 3
    assert len(server.requests) == 3 and server.answered == [] and server.rejected == []


# -- Bedrock Converse toolConfig --------------------------------------------------------------------------------

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA = "meta.llama3-8b-instruct-v1:0"
COHERE = "cohere.command-r-v1:0"


def tool_config(choice: dict[str, Any]) -> dict[str, Any]:
    return {"tools": [{"toolSpec": {"name": "output", "description": "the answer",
                                    "inputSchema": {"json": SCHEMA}}}], "toolChoice": choice}


@pytest.fixture
def bedrock(aws_env):
    import boto3

    with FakeBedrockServer() as server:
        yield server, boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1")


def converse(client, model: str, **fields) -> dict[str, Any]:
    return client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "Describe a person."}]}],
                           **fields)


@pytest.mark.parametrize("choice", [{"tool": {"name": "output"}}, {"any": {}}, {"auto": {}}],
                         ids=["tool", "any", "auto"])
def test_bedrock_answers_tool_config_with_a_tool_use_following_the_input_schema(bedrock, choice):
    _, client = bedrock
    reply = converse(client, HAIKU, toolConfig=tool_config(choice))
    (block,) = reply["output"]["message"]["content"]
    assert reply["stopReason"] == "tool_use"
    assert block["toolUse"]["name"] == "output" and block["toolUse"]["toolUseId"].startswith("tooluse_")
    assert jsonschema.Draft202012Validator(SCHEMA).is_valid(block["toolUse"]["input"])


def test_bedrock_tool_use_input_is_deterministic(bedrock):
    _, client = bedrock
    first, second = (converse(client, HAIKU, toolConfig=tool_config({"any": {}})) for _ in range(2))
    assert first["output"] == second["output"]


@pytest.mark.parametrize("model", [LLAMA, "us.meta.llama3-2-1b-instruct-v1:0", "amazon.titan-text-express-v1"])
def test_bedrock_model_without_tool_use_refuses_tool_config(bedrock, model):
    from botocore.exceptions import ClientError

    _, client = bedrock
    with pytest.raises(ClientError) as info:
        converse(client, model, toolConfig=tool_config({"auto": {}}))
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"] == {"Code": "ValidationException", "Message": "This model doesn't support tool use."}


def test_bedrock_no_tool_models_is_configurable(aws_env):
    import boto3

    with FakeBedrockServer(no_tool_models={HAIKU}) as server:
        client = boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1")
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError):
            converse(client, HAIKU, toolConfig=tool_config({"any": {}}))
        assert converse(client, LLAMA, toolConfig=tool_config({"any": {}}))["stopReason"] == "tool_use"


def test_bedrock_refuses_tool_choice_tool_outside_anthropic_nova_mistral(bedrock):
    from botocore.exceptions import ClientError

    _, client = bedrock
    with pytest.raises(ClientError) as info:
        converse(client, COHERE, toolConfig=tool_config({"tool": {"name": "output"}}))
    assert info.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "This model doesn't support the toolChoice.tool field. Remove toolChoice.tool and try again."}


def test_bedrock_takes_tool_choice_any_outside_anthropic_nova_mistral(bedrock):
    _, client = bedrock
    assert converse(client, COHERE, toolConfig=tool_config({"any": {}}))["stopReason"] == "tool_use"


def test_bedrock_follows_a_schema_written_in_the_system_prompt(bedrock):
    _, client = bedrock
    reply = converse(client, LLAMA, system=[{"text": f"Be terse.\n\n{MARKER}{json.dumps(SCHEMA)}"}])
    assert reply["stopReason"] == "end_turn"
    assert follows_schema(reply["output"]["message"]["content"][0]["text"])


def test_bedrock_without_tools_or_schema_still_echoes(bedrock):
    _, client = bedrock
    reply = converse(client, LLAMA)
    assert reply["output"]["message"]["content"] == [{"text": "echo: Describe a person."}]
