"""The intents the chatbot recognises. The labels are part of the public contract."""

from enum import StrEnum


class Intent(StrEnum):
    PRODUCT_SEARCH = "product_search"
    """Looking for a given title, author, volume or format, or a catalog fact about one: price,
    stock, availability, author, volume count, status, rating, publisher, year, genre."""
    RECOMMENDATION = "recommendation"
    """Asking what to read: suggestions by taste, genre, age or likeness to a title."""
    ORDER_STATUS = "order_status"
    """Asking about one of their orders: where it is, when it arrives, changing it once placed."""
    POLICY_QUESTION = "policy_question"
    """Store policy and guides: shipping, returns, payment, preorders, reading order."""
    CHITCHAT = "chitchat"
    """Greetings, thanks, small talk, questions about the assistant itself ("are you a bot?")."""
    HUMAN_HANDOFF = "human_handoff"
    """Wants a person."""
    OUT_OF_SCOPE = "out_of_scope"
    """Unrelated to the store; politely refused."""


INTENTS: tuple[str, ...] = tuple(i.value for i in Intent)
