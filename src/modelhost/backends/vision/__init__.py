"""Vision backends: OCR and image captioning."""
