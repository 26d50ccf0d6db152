# LocalStack init hook for host mode (no Docker), so `sam deploy` of template.yaml can create
# every resource. localstack.sh copies it to $FILESYSTEM_ROOT/etc/localstack/init/start.d/;
# host mode runs start.d scripts inside the LocalStack process (boot.d only runs in Docker).
#
# - Lambda: creating a function prepares its runtime image, which needs Docker. Skipping that
#   step lets functions (and their event source mappings) be created, read and deleted; they
#   cannot be invoked.
# - DynamoDB: LocalStack starts DynamoDB Local, which it downloads with a Java runtime first
#   (impossible offline). Skipping the start makes it forward DynamoDB requests to whatever
#   listens on DYNAMODB_LOCAL_PORT: localstack.sh points that at the project's emulator.
from localstack.services.dynamodb.server import DynamodbServer
from localstack.services.lambda_.invocation.docker_runtime_executor import DockerRuntimeExecutor


def _skip_image_preparation(cls, function_version):
    """Functions are created without a runtime image: there is no Docker to run them."""


def _use_running_server(self):
    """The emulator on DYNAMODB_LOCAL_PORT is already running."""
    return True


def _leave_running_server(self):
    """The emulator is not LocalStack's to stop."""


DockerRuntimeExecutor.prepare_version = classmethod(_skip_image_preparation)
DynamodbServer.start_dynamodb = _use_running_server
DynamodbServer.stop_dynamodb = _leave_running_server
