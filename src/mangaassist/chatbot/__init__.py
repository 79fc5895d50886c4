"""The workload: the MangaAssist chatbot service (FastAPI).

Reaches tables, config, index and the model only through the clients it is given.
Entry point for uvicorn: ``mangaassist.chatbot.app:create_app`` (a factory).
"""
