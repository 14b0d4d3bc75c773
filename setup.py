"""Shoal: local cluster provisioning. ``pip install .`` puts the ``shoal`` command on PATH."""

import re

from setuptools import find_packages, setup

with open("cluster_server/version.py") as f:
    VERSION = re.search(r'VERSION = "(.+)"', f.read()).group(1)

setup(
    name="shoal",
    version=VERSION,
    description="Local cluster provisioning: templates, layouts, task graphs, plugins",
    long_description=open("README.rst").read(),
    python_requires=">=3.10",
    packages=find_packages(include=["cluster_cli*", "cluster_server*", "extensions*"]),
    include_package_data=True,
    # The images Shoal builds: installed under <prefix>/share/shoal/dockerfiles, where the
    # docker-cli automator looks when it does not run from a checkout.
    data_files=[(f"share/shoal/dockerfiles/{cli}", [f"dockerfiles/{cli}/Dockerfile"])
                for cli in ("aws", "gcloud", "kubectl", "ansible")],
    package_data={"cluster_server": ["catalog_default/*/*.json", "ui/templates/*.html",
                                     "ui/static/*", "ui/static/vendor/*"],
                  "extensions": ["resources/*/*", "automators/ansible_callbacks/*.py"]},
    install_requires=[
        "cliff>=4.0",
        "stevedore>=5.0",
        "flask>=3.0",
        "waitress>=3.0",
        "sqlite-utils>=3.35",
        "PyYAML>=6.0",
        "paramiko>=3.4",
        "cryptography>=42",  # Fernet seals the store's secrets (paramiko needs it too)
        "prometheus-client>=0.17",  # /api/v1/metrics in the text format Prometheus scrapes
    ],
    extras_require={
        "docker": ["docker>=7.0"],
        "aws": ["boto3>=1.34"],
        "gcp": ["google-cloud-compute>=1.14"],
        "ansible": ["ansible-core>=2.15"],
        # The celery executor and `shoal worker start` (Redis as broker and result backend).
        "celery": ["celery[redis]>=5.4,<6"],
        "test": ["pytest>=8", "hypothesis>=6.100", "pexpect>=4.8", "docker>=7.0",
                 "boto3>=1.34", "moto[server]>=5.0", "google-cloud-compute>=1.14",
                 "ansible-core>=2.15",
                 # The API's contract: validated as OpenAPI 3.1, fuzzed (tests/contract).
                 "openapi-spec-validator>=0.7", "schemathesis>=4.3,<5",
                 "celery[redis]>=5.4,<6",
                 # The web UI in a real browser: Debian's chromium through chromedriver.
                 "selenium>=4.20",
                 # ... and Debian's firefox-esr over Marionette (no geckodriver package).
                 "marionette-driver>=3.7"],
    },
    entry_points={
        "console_scripts": ["shoal = cluster_cli.main:main"],
        "shoal.providers": [
            "local = extensions.providers.local:LocalProvider",
            "ssh = extensions.providers.ssh:SSHProvider",
            "docker = extensions.providers.docker:DockerProvider",
            "aws = extensions.providers.aws:AWSProvider",
            "gcp = extensions.providers.gcp:GCPProvider",
        ],
        "shoal.databases": [
            "aws-rds = extensions.databases.aws_rds:RDSDatabase",
            "gcp-cloudsql = extensions.databases.gcp_cloudsql:CloudSQLDatabase",
        ],
        "shoal.automators": [
            "shell = extensions.automators.shell:ShellAutomator",
            "docker-cli = extensions.automators.docker_cli:DockerCLIAutomator",
            "ansible = extensions.automators.ansible:AnsibleAutomator",
        ],
    },
)
