"""gcp-storage-emulator with GCS's ``ifGenerationMatch`` preconditions on uploads and deletes.

The stock emulator ignores preconditions, so a conditional create there always "wins"; real
GCS answers 412. Its HTTP server is single-threaded, so checking the generation and then
writing, as done here, is as atomic as GCS's own check. Run as
``python gcs_emulator_preconditions.py start --host=... --port=... --in-memory``.
"""

from __future__ import annotations

import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _generation(storage, bucket: str, name: str | None) -> str:
    try:
        return str(storage.get_file_obj(bucket, name)["generation"])
    except (NotFound, KeyError, TypeError):
        return "0"


def _refused(request, response, storage, name: str | None) -> bool:
    wanted = request.query.get("ifGenerationMatch")
    if not wanted or wanted[0] == _generation(storage, request.params["bucket_name"], name):
        return False
    response.status = HTTPStatus.PRECONDITION_FAILED
    response.json({"error": {"code": 412, "message": "conditionNotMet",
                             "errors": [{"reason": "conditionNotMet",
                                         "message": "Precondition Failed"}]}})
    return True


def _upload_name(request) -> str | None:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data if isinstance(request.data, dict) else {}
    return (data.get("meta") or {}).get("name")


def _wrap(handler, name_of):
    def checked(request, response, storage, *args, **kwargs):
        if _refused(request, response, storage, name_of(request)):
            return None
        return handler(request, response, storage, *args, **kwargs)
    return checked


objects.insert = _wrap(objects.insert, _upload_name)
objects.delete = _wrap(objects.delete, lambda request: request.params["object_id"])

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])
