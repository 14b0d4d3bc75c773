"""``shoal setup aws|gcp`` through the real CLI and server: the clouds' standard credential
sources, checked with one call against loopback emulators, recorded 0600, secrets never shown."""

import json
import os
import stat

import pytest

from tests.aws_fakes import EC2Proxy, moto_server
from tests.cloudkit import isolate
from tests.conftest import Shoal
from tests.fake_gce import FakeGCE, service_account_file

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSHOALSECRET"


@pytest.fixture
def shoal(tmp_path):
    client = Shoal(tmp_path / "home")
    isolate(client, tmp_path)
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "credentials").write_text(
        f"[shoal-test]\naws_access_key_id = AKIDSHOALPROFILE\naws_secret_access_key = "
        f"{AWS_SECRET}\n")
    (tmp_path / "aws" / "config").write_text("[profile shoal-test]\nregion = us-west-2\n")
    client.run("server", "start")
    yield client
    client.run("server", "stop")


def nothing_secret_anywhere(shoal, secrets, *outputs):
    texts = [*outputs, (shoal.home / "server.log").read_text(),
             (shoal.home / "clouds.json").read_text()]
    for secret in secrets:
        assert not any(secret in text for text in texts)
    assert stat.S_IMODE(os.stat(shoal.home / "clouds.json").st_mode) == 0o600


def test_setup_aws_checks_a_profile_and_records_it(shoal):
    with moto_server() as moto, EC2Proxy(moto) as proxy:
        result = shoal.run("setup", "aws", "--profile", "shoal-test", "--endpoint-url",
                           proxy.url, "-f", "json")
        shown = json.loads(result.stdout)
        assert shown == {"profile": "shoal-test", "region": "us-west-2",
                         "source": "shared-credentials-file", "account": "123456789012",
                         "arn": "arn:aws:sts::123456789012:user/moto",
                         "endpoint_url": proxy.url}
        assert proxy.calls == {"GetCallerIdentity": 1}  # one cheap call, nothing else
        recorded = json.loads((shoal.home / "clouds.json").read_text())["aws"]
        assert recorded["profile"] == "shoal-test" and recorded["region"] == "us-west-2"
        nothing_secret_anywhere(shoal, [AWS_SECRET], result.stdout, result.stderr,
                                json.dumps(shoal.json("server", "status")))

        failed = shoal.fails("setup", "aws", "--profile", "nope", "--endpoint-url", proxy.url)
        assert "AWS profile 'nope' is not in the AWS config or credentials files" in \
            failed.stderr
        # No credentials at all: a clear message (and no instance metadata service asked).
        (shoal.home.parent / "aws" / "credentials").write_text("")
        failed = shoal.fails("setup", "aws", "--endpoint-url", proxy.url)
        assert "no AWS credentials found" in failed.stderr


def test_setup_gcp_checks_a_service_account_or_application_defaults(shoal, tmp_path):
    with FakeGCE(project="shoal-setup") as fake:
        key_file = service_account_file(str(tmp_path), fake)
        private_key = json.loads(open(key_file).read())["private_key"]
        result = shoal.run("setup", "gcp", "--credentials", key_file, "--api-endpoint", fake.url,
                           "-f", "json")
        assert json.loads(result.stdout) == {
            "project": "shoal-setup", "source": "service-account", "credentials_file": key_file,
            "client_email": "shoal-test@shoal-setup.iam.gserviceaccount.com",
            "api_endpoint": fake.url}
        assert fake.calls == {"projects.get": 1}
        key_lines = [line for line in private_key.splitlines() if "PRIVATE" not in line]
        nothing_secret_anywhere(shoal, key_lines[:3], result.stdout, result.stderr)

        # Application default credentials: GOOGLE_APPLICATION_CREDENTIALS of the server.
        shoal.run("server", "stop")
        shoal.env["GOOGLE_APPLICATION_CREDENTIALS"] = key_file
        shoal.run("server", "start")
        shown = shoal.json("setup", "gcp", "--api-endpoint", fake.url)
        assert shown["source"] == "application-default" and shown["project"] == "shoal-setup"

        failed = shoal.fails("setup", "gcp", "--credentials", str(tmp_path / "missing.json"),
                             "--api-endpoint", fake.url)
        assert "no such credentials file" in failed.stderr
        failed = shoal.fails("setup", "gcp", "--credentials", key_file, "--project", "other",
                             "--api-endpoint", fake.url)
        assert "rejected the credentials" in failed.stderr and "404" in failed.stderr
        assert "PRIVATE KEY" not in (shoal.home / "server.log").read_text()
