"""Prints template.yaml after the SAM transform, as CloudFormation JSON, offline.

    infra/tools/tools.sh python infra/tools/transform.py [TEMPLATE] [KEY=VALUE ...]

This is what CloudFormation deploys: the roles, policies, permissions and event source mappings
SAM generates are in it, so least privilege can be checked after the transform, not only in the
source (tests/src/template.rs, `transformed_violations`). Runs the pinned SAM translator from the
tools venv with no credentials and no network: SAM looks managed policies up by name only for
`Policies` entries naming one, and the map it would fetch is given here as the few names this
template may use (a name not in it fails the transform, which is what a test wants to hear).

Parameter values (KEY=VALUE) override the defaults for the transform's own evaluation (SAM
resolves a few intrinsics itself); CloudFormation resolves the rest at deploy time.
"""

import json
import os
import sys
from pathlib import Path

import yaml
from samtranslator.parser.parser import Parser
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[2]

# The managed policies SAM may attach by name. Offline, the translator cannot list them.
MANAGED_POLICIES = {
    name: f"arn:aws:iam::aws:policy/{path}{name}"
    for name, path in (
        ("AWSLambdaBasicExecutionRole", "service-role/"),
        ("AWSLambdaSQSQueueExecutionRole", "service-role/"),
        ("AWSXrayWriteOnlyAccess", ""),
        ("AWSLambdaVPCAccessExecutionRole", "service-role/"),
    )
}


class ManagedPolicies:
    """The translator's managed policy loader, answered from MANAGED_POLICIES."""

    def load(self):
        return MANAGED_POLICIES


class Loader(yaml.SafeLoader):
    """CloudFormation's YAML: short-form intrinsics, and no timestamps ("2012-10-17" is text)."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _intrinsic(loader, suffix, node):
    """`!Name arg` as its long form (`Ref`, `Fn::Name`); `!GetAtt A.B` as [A, B]."""
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}


Loader.add_multi_constructor("!", _intrinsic)


def main(argv):
    path = ROOT / "template.yaml"
    parameters = {}
    for arg in argv:
        if "=" in arg:
            key, value = arg.split("=", 1)
            parameters[key] = value
        else:
            path = Path(arg)
    template = yaml.load(path.read_text(), Loader=Loader)
    # sam build replaces a local CodeUri with the built artefact's; the transform wants an S3
    # location (sam validate does the same).
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            code = resource.setdefault("Properties", {}).get("CodeUri")
            if isinstance(code, str) and not code.startswith("s3://"):
                resource["Properties"]["CodeUri"] = "s3://bucket/code.zip"
    # The translator builds ARNs with the region's partition; no call leaves the machine.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_REGION", os.environ["AWS_DEFAULT_REGION"])
    transformed = transform(template, parameters, ManagedPolicies(), Parser())
    json.dump(transformed, sys.stdout, indent=1, sort_keys=True, default=str)
    print()


if __name__ == "__main__":
    main(sys.argv[1:])
