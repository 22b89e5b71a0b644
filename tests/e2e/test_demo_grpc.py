"""`mirror demo` from a user's side, over gRPC: the official SDK needs only the printed address.

The demo prints its gRPC address; ``yandexcloud.SDK`` pointed there (the plain
loopback form: the demo has no tokens and no TLS) lists, gets and deletes
images, and the Delete's operation completes, with no other change.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import grpc
import pytest
import yandexcloud
from yandex.cloud.containerregistry.v1 import image_service_pb2
from yandex.cloud.containerregistry.v1.image_service_pb2_grpc import ImageServiceStub
from yandex.cloud.operation import operation_service_pb2
from yandex.cloud.operation.operation_service_pb2_grpc import OperationServiceStub

from tests.e2e.demo_process import run_demo

pytestmark = pytest.mark.timeout(300)

IMAGES = 2000
OPERATION_TIMEOUT_S = 30.0


def test_the_sdk_lists_gets_and_deletes_through_the_demo(tmp_path: Path) -> None:
    with run_demo(tmp_path, "--images", str(IMAGES), "--churn", "0", "--grpc-port", "0") as demo:
        demo.wait_for_output("first mirror:")
        printed = re.search(r"gRPC API:\s+(\S+)", demo.output())
        assert printed, demo.output()
        address = printed[1]
        assert address.startswith("127.0.0.1:")

        sdk = yandexcloud.SDK(iam_token="unused-by-the-demo")
        images = sdk.client(ImageServiceStub, endpoint=address, insecure=True)
        operations = sdk.client(OperationServiceStub, endpoint=address, insecure=True)
        folder = demo.folder_ids()[0]
        seen: list[str] = []
        token = ""
        while True:
            page = images.List(
                image_service_pb2.ListImagesRequest(
                    folder_id=folder, page_size=250, page_token=token
                )
            )
            seen += [image.id for image in page.images]
            token = page.next_page_token
            if not token:
                break
        rest = demo.get("/container-registry/v1/images", folderId=folder, pageSize=1000)
        assert seen[:1000] == [image["id"] for image in rest["images"]]
        assert len(seen) == len(set(seen)) and len(seen) > 100

        victim = seen[0]
        assert images.Get(image_service_pb2.GetImageRequest(image_id=victim)).id == victim
        operation = images.Delete(image_service_pb2.DeleteImageRequest(image_id=victim))
        deadline = time.monotonic() + OPERATION_TIMEOUT_S
        while not operation.done:
            assert time.monotonic() < deadline, "the delete did not complete"
            time.sleep(0.2)
            operation = operations.Get(
                operation_service_pb2.GetOperationRequest(operation_id=operation.id)
            )
        assert not operation.HasField("error")
        with pytest.raises(grpc.RpcError) as gone:
            images.Get(image_service_pb2.GetImageRequest(image_id=victim))
        assert gone.value.code() is grpc.StatusCode.NOT_FOUND
