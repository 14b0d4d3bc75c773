"""Write tests/data/store-v1.db: a store as the release before sealed secrets wrote it (commit
e1e0bdd), for the migration test. Run with that release's code first on the path:

    git worktree add /tmp/prev e1e0bdd
    PYTHONPATH=/tmp/prev .venv/bin/python tests/data/make_store_v1.py tests/data/store-v1.db
"""

import pathlib
import shutil
import sys
import tempfile

from cluster_server import operations
from cluster_server.app import create_app

SECRETS = {"api_user": "AKIAOLDRELEASE0000001", "api_password": "old-release-secret-key-0001"}
KV_PASSWORD = "old-release-kv-password-0001"

target = pathlib.Path(sys.argv[1])
with tempfile.TemporaryDirectory() as home:
    app = create_app(home=pathlib.Path(home), token="t", start_engine=False)
    client = app.test_client()
    reply = client.post("/api/v1/providers", headers={"Authorization": "Bearer t"}, json={
        "name": "aws-old", "providertype": "aws",
        "provisioner": {"aws_region": "us-east-1", **SECRETS}})
    assert reply.status_code == 201, reply.get_json()
    operations.create(app.store, "default", {"name": "old-kv", "template": "local-kv", "size": 2,
                                             "config": {"kv": {"password": KV_PASSWORD}}})
    app.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(pathlib.Path(home) / "shoal.db", target)
print(target)
