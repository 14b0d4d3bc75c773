"""Which cloud credentials the providers use: chosen by ``shoal setup aws|gcp``.

Each choice is checked with one cheap call before it is recorded in ``SHOAL_HOME/clouds.json``
(mode 0600). Only where the credentials are is recorded (a profile name, a file path), never a
secret, and nothing returned from here carries one. A provider entry that names its own
credentials uses those instead.
"""

import json
import logging
import os
import pathlib
import threading
import time

from cluster_server import config
from cluster_server.errors import PluginError, ProviderError, Unprocessable, ValidationError

LOG = logging.getLogger("shoal.clouds")
CLOUDS_FILE = "clouds.json"
GCP_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_lock = threading.Lock()


def _path(home):
    return pathlib.Path(home) / CLOUDS_FILE


def load(home):
    """Every recorded choice: ``{"aws": {...}, "gcp": {...}}`` (empty when none)."""
    try:
        return json.loads(_path(home).read_text())
    except (OSError, ValueError):
        return {}


def recorded(home, cloud):
    return load(home).get(cloud) or {}


def _record(home, cloud, choice):
    with _lock:
        data = load(home)
        data[cloud] = choice
        config.write_private(_path(home), json.dumps(data, indent=2, sort_keys=True))
    return choice


def _missing_package(cloud, package, extra):
    return PluginError(f"the {cloud} provider needs {package}: pip install 'shoal[{extra}]'",
                       {"cloud": cloud, "package": package})


# -- AWS ------------------------------------------------------------------------------------------


def aws_session(profile=None, region=None, access_key=None, secret_key=None, session_token=None):
    """A boto3 session from explicit keys, else a profile, else the standard chain."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise _missing_package("aws", "boto3", "aws") from None
    try:
        if access_key and secret_key:
            return boto3.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                                 aws_session_token=session_token or None, region_name=region)
        return boto3.Session(profile_name=profile or None, region_name=region or None)
    except botocore.exceptions.ProfileNotFound:
        raise ValidationError(f"AWS profile {profile!r} is not in the AWS config or credentials "
                              "files", {"field": "profile", "reason": "not found"}) from None


def setup_aws(home, profile=None, region=None, endpoint_url=None):
    """Check the credentials of ``profile`` (default: the standard chain) with STS
    GetCallerIdentity, then record the choice. Returns what was recorded."""
    import botocore.exceptions

    session = aws_session(profile, region)
    credentials = session.get_credentials()
    if credentials is None:
        raise Unprocessable(
            "no AWS credentials found" + (f" for profile {profile!r}" if profile else "") +
            ": configure a profile (aws configure) or set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY for the Shoal server", {"cloud": "aws", "reason": "none"})
    region = session.region_name
    sts = session.client("sts", region_name=region or "us-east-1",
                         endpoint_url=endpoint_url or None)
    try:
        identity = sts.get_caller_identity()
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise ProviderError(f"AWS rejected the credentials from {credentials.method}: {exc}",
                            {"cloud": "aws", "source": credentials.method}) from None
    choice = {"profile": profile or None, "region": region, "source": credentials.method,
              "account": identity.get("Account"), "arn": identity.get("Arn"),
              "endpoint_url": endpoint_url or None, "checked_at": time.time()}
    LOG.info("aws credentials checked: %s from %s", choice["arn"], choice["source"])
    return _record(home, "aws", choice)


# -- GCP ------------------------------------------------------------------------------------------


def gcp_credentials(credentials_file=None):
    """(credentials, project, email, source) from a service-account file, else application
    default credentials."""
    try:
        import google.auth
        import google.auth.exceptions
        from google.oauth2 import service_account
    except ImportError:
        raise _missing_package("gcp", "google-cloud-compute", "gcp") from None
    if credentials_file:
        path = os.path.abspath(os.path.expanduser(credentials_file))
        try:
            creds = service_account.Credentials.from_service_account_file(path,
                                                                          scopes=GCP_SCOPES)
        except FileNotFoundError:
            raise Unprocessable(f"no such credentials file: {path}",
                                  {"field": "credentials", "reason": "not found"}) from None
        except (ValueError, KeyError) as exc:
            # Name the missing key only: the message of a parse error may quote the file.
            raise Unprocessable(f"{path} is not a Google service-account key file "
                                  f"({type(exc).__name__})",
                                  {"field": "credentials", "reason": "invalid"}) from None
        return creds, creds.project_id, creds.service_account_email, "service-account"
    try:
        creds, project = google.auth.default(scopes=GCP_SCOPES)
    except google.auth.exceptions.DefaultCredentialsError:
        raise Unprocessable(
            "no Google credentials found: pass --credentials with a service-account key file, "
            "or set up application default credentials (gcloud auth application-default login)",
            {"cloud": "gcp", "reason": "none"}) from None
    return creds, project, getattr(creds, "service_account_email", None), "application-default"


def setup_gcp(home, credentials_file=None, project=None, api_endpoint=None):
    """Check the credentials with one Compute ``projects.get``, then record the choice."""
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1

    path = os.path.abspath(os.path.expanduser(credentials_file)) if credentials_file else None
    creds, found_project, email, source = gcp_credentials(path)
    project = project or found_project
    if not project:
        raise ValidationError("no Google Cloud project: pass --project",
                              {"field": "project", "reason": "required"})
    options = {"api_endpoint": api_endpoint} if api_endpoint else None
    client = compute_v1.ProjectsClient(credentials=creds, client_options=options,
                                       transport="rest")
    try:
        client.get(project=project, timeout=30)
    except gexc.GoogleAPICallError as exc:
        raise ProviderError(f"Google Compute rejected the credentials ({source}) for project "
                            f"{project}: {int(exc.code or 0)}: {exc.message}",
                            {"cloud": "gcp", "source": source, "project": project}) from None
    except Exception as exc:  # token refresh errors, unreachable endpoint
        raise ProviderError(f"cannot check the Google credentials ({source}): "
                            f"{type(exc).__name__}: {str(exc)[:200]}",
                            {"cloud": "gcp", "source": source}) from None
    choice = {"credentials_file": path, "project": project, "client_email": email,
              "source": source, "api_endpoint": api_endpoint or None, "checked_at": time.time()}
    LOG.info("gcp credentials checked: %s (%s) for project %s", email or "-", source, project)
    return _record(home, "gcp", choice)
