"""What every component of the program shares: its children hang under it."""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

import pulumi
import pulumi_aws as aws

ArgsT = TypeVar("ArgsT")


def trust_policy(service: str) -> str:
    """An IAM role's trust policy: the AWS `service` (its principal name) may assume it."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


class Component(pulumi.ComponentResource, Generic[ArgsT]):
    """A component resource built from its args, whose children it declares itself (the type
    token stays the subclass's, so URNs are those of a plain ComponentResource)."""

    def __init__(
        self, type_: str, name: str, args: ArgsT, opts: pulumi.ResourceOptions | None
    ) -> None:
        super().__init__(type_, name, None, opts)
        self._name = name
        self._args = args

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def _log_group(
        self,
        name: str,
        group_name: str,
        kms_key_arn: pulumi.Input[str],
        retention_days: int,
    ) -> aws.cloudwatch.LogGroup:
        """The component's CloudWatch log group (`<name>-logs`), encrypted with the stack's key."""
        return aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=group_name,
            kms_key_id=kms_key_arn,
            retention_in_days=retention_days,
            opts=self._opts(),
        )
