"""``shoal setup aws|gcp``: choose the credentials the cloud providers use.

The server checks them with one cheap call and records the choice in SHOAL_HOME; the CLI only
passes names and paths, and prints what was recorded (never a secret).
"""

import os

from cluster_cli.v1.base import ShoalShowOne

COLUMNS = {
    "aws": ("profile", "region", "source", "account", "arn", "endpoint_url"),
    "gcp": ("project", "source", "credentials_file", "client_email", "api_endpoint"),
}


class _Setup(ShoalShowOne):
    cloud = None

    def show(self, body, parsed_args):
        result = self.client.post(f"/setup/{self.cloud}", body)
        return self.show_dict({key: result.get(key) or "" for key in COLUMNS[self.cloud]},
                              parsed_args)


class SetupAws(_Setup):
    """Check AWS credentials (a profile, or the standard chain) and use them for aws providers."""

    cloud = "aws"

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--profile", help="a profile of ~/.aws/config and ~/.aws/credentials "
                                              "(default: the environment, then 'default')")
        parser.add_argument("--region", help="region for providers that name none (default: "
                                             "the profile's)")
        parser.add_argument("--endpoint-url", help="another EC2/STS endpoint (an emulator)")
        return parser

    def take_action(self, parsed_args):
        return self.show({"profile": parsed_args.profile, "region": parsed_args.region,
                          "endpoint_url": parsed_args.endpoint_url}, parsed_args)


class SetupGcp(_Setup):
    """Check Google credentials (a service-account key, or application defaults) for gcp."""

    cloud = "gcp"

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--credentials", metavar="FILE",
                            help="a service-account key file (default: application default "
                                 "credentials); it is referred to, not copied")
        parser.add_argument("--project", help="project for providers that name none (default: "
                                              "the credentials')")
        parser.add_argument("--api-endpoint", help="another Compute API endpoint (an emulator)")
        return parser

    def take_action(self, parsed_args):
        path = parsed_args.credentials
        return self.show({"credentials_file": os.path.abspath(path) if path else None,
                          "project": parsed_args.project,
                          "api_endpoint": parsed_args.api_endpoint}, parsed_args)
