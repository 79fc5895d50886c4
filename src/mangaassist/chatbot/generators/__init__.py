"""Response generators behind one protocol: ``local`` (default), ``bedrock``, ``openai``."""

from mangaassist.chatbot.generators.base import GenerationRequest, GeneratorError, ResponseGenerator
from mangaassist.chatbot.generators.factory import make_generator
from mangaassist.chatbot.generators.local import LocalComposer

__all__ = ["GenerationRequest", "GeneratorError", "LocalComposer", "ResponseGenerator", "make_generator"]
