"""One ML-free request model and result model per task (pydantic only).

The route validates a request with the task's request model (which also builds the OpenAPI document), sends
``model_dump()`` of it to the worker as the payload, and the backend base class parses that payload back into the
same model before ``infer()`` sees it — so each rule about a request is written once, here. Rules that need the
loaded model (an embedding size, a voice, a context length) stay in the backend.
"""
