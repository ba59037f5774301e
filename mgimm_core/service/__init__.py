"""The request service behind the JSON-lines worker and the HTTP server (docs/protocol.md).

protocol: version, error codes and statuses, the error payload, checked parameters;
handlers: the Service (model + path policy) and one handler per request type;
thumbnails: the chip the model saw, as a small PNG.
"""

from .handlers import HANDLERS, Service, handle_describe, handle_describe_file, handle_hello, outcome_entry
from .protocol import ERROR_CODES, PROTOCOL_VERSION, ServiceError, error_payload
from .thumbnails import encode_png, thumbnail_png_b64

__all__ = ["PROTOCOL_VERSION", "ERROR_CODES", "ServiceError", "Service", "HANDLERS", "error_payload",
           "handle_hello", "handle_describe", "handle_describe_file", "outcome_entry", "thumbnail_png_b64",
           "encode_png"]
