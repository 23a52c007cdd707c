"""The plain reference service every scenario is compared with, built the seed's way:
FastAPI + pydantic under uvicorn with one XADD per request (``app``), and a worker that
reads one entry, INSERTs it with autocommit and XACKs it (``worker``)."""
