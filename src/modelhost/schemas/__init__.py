"""Request and result models shared by routes (validation, OpenAPI) and the code that serves them."""
