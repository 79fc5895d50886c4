"""Bedrock and OpenAI-compatible generators against stubbed transports, never the network."""

import json

import boto3
import httpx
import pytest
from botocore.stub import Stubber

from mangaassist.chatbot.generators import GenerationRequest, GeneratorError, LocalComposer
from mangaassist.chatbot.generators.bedrock import BedrockGenerator
from mangaassist.chatbot.generators.openai import OpenAICompatibleGenerator

REQUEST = GenerationRequest(
    intent="product_search",
    message="do you have one piece vol 104?",
    lead="Here's what I found:",
    facts=["One Piece by Eiichiro Oda has 110 volumes.", "Each volume costs $11.99."],
    system_prompt="Answer only from facts.",
)


async def test_local_composer_states_lead_then_facts_verbatim() -> None:
    text = await LocalComposer().generate(REQUEST)
    assert text == "Here's what I found: One Piece by Eiichiro Oda has 110 volumes. Each volume costs $11.99."


def _bedrock() -> tuple[BedrockGenerator, Stubber]:
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return BedrockGenerator(model_id="anthropic.claude-3-haiku", client=client), Stubber(client)


def test_bedrock_converse_request_and_answer() -> None:
    gen, stub = _bedrock()
    expected_params = {
        "modelId": "anthropic.claude-3-haiku",
        "system": [{"text": "Answer only from facts."}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "text": __import__(
                            "mangaassist.chatbot.generators.base", fromlist=["render_prompt"]
                        ).render_prompt(REQUEST)
                    }
                ],
            }
        ],
        "inferenceConfig": {"maxTokens": 400, "temperature": 0.0},
    }
    response = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Yes! Volume 104 is $11.99."}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15},
        "metrics": {"latencyMs": 12},
    }
    stub.add_response("converse", response, expected_params)
    with stub:
        assert gen.generate_sync(REQUEST) == "Yes! Volume 104 is $11.99."
    stub.assert_no_pending_responses()


def test_bedrock_errors_become_generator_errors() -> None:
    gen, stub = _bedrock()
    stub.add_client_error("converse", service_error_code="ThrottlingException", http_status_code=429)
    with stub, pytest.raises(GeneratorError, match="ThrottlingException"):
        gen.generate_sync(REQUEST)


async def test_openai_compatible_request_and_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"choices": [{"message": {"role": "assistant", "content": "Sure thing."}}]}
        )

    gen = OpenAICompatibleGenerator(
        "http://llm.local/v1", "llama3", api_key="k-test", transport=httpx.MockTransport(handler)
    )
    assert await gen.generate(REQUEST) == "Sure thing."
    body = json.loads(seen[0].content)
    assert seen[0].url.path == "/v1/chat/completions"
    assert seen[0].headers["Authorization"] == "Bearer k-test"
    assert body["model"] == "llama3"
    assert body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": "Answer only from facts."}
    assert "Each volume costs $11.99." in body["messages"][1]["content"]
    await gen.aclose()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500, text="boom"),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"choices": [{"message": {"content": ""}}]}),
    ],
)
async def test_openai_compatible_failures_become_generator_errors(response: httpx.Response) -> None:
    gen = OpenAICompatibleGenerator(
        "http://llm.local/v1", "m", transport=httpx.MockTransport(lambda r: response)
    )
    with pytest.raises(GeneratorError):
        await gen.generate(REQUEST)
    await gen.aclose()
