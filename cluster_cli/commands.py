"""Every ``shoal`` command, name -> "module:Class" (the one place that lists them)."""

NOUNS = ("provider", "hardwaretype", "imagetype", "service", "template", "partial")

COMMANDS = {
    "complete": "cliff.complete:CompleteCommand",
    "server start": "cluster_cli.v1.server:StartServer",
    "server stop": "cluster_cli.v1.server:StopServer",
    "server status": "cluster_cli.v1.server:ServerStatus",
    "server logs": "cluster_cli.v1.server:ServerLogs",
    "catalog import": "cluster_cli.v1.catalog:ImportCatalog",
    "catalog export": "cluster_cli.v1.catalog:ExportCatalog",
    "catalog check": "cluster_cli.v1.catalog:CheckCatalog",
}

_CLUSTER = {
    "plan": "PlanCluster", "create": "CreateCluster", "list": "ListClusters",
    "show": "ShowCluster", "delete": "DeleteCluster", "resize": "ResizeCluster",
    "add-services": "AddServices", "remove-services": "RemoveServices",
    "reconfigure": "ReconfigureCluster", "start": "StartCluster", "stop": "StopCluster",
    "restart": "RestartCluster", "cancel": "CancelCluster", "pause": "PauseCluster",
    "resume": "ResumeCluster", "retry": "RetryCluster", "events": "ClusterEvents",
}
for _verb, _cls in _CLUSTER.items():
    COMMANDS[f"cluster {_verb}"] = f"cluster_cli.v1.cluster:{_cls}"
for _verb in ("upload", "list", "show", "stage", "activate", "recall", "delete"):
    COMMANDS[f"resource {_verb}"] = f"cluster_cli.v1.resource:{_verb.capitalize()}Resource"
COMMANDS["cluster health"] = "cluster_cli.v1.health:ClusterHealth"
COMMANDS["cluster check"] = "cluster_cli.v1.health:CheckCluster"
COMMANDS["cluster shell"] = "cluster_cli.v1.shell:ShellCluster"
COMMANDS["cluster exec"] = "cluster_cli.v1.shell:ExecCluster"
COMMANDS["setup aws"] = "cluster_cli.v1.setup:SetupAws"
COMMANDS["setup gcp"] = "cluster_cli.v1.setup:SetupGcp"
COMMANDS["ui"] = "cluster_cli.v1.ui:OpenUI"
COMMANDS["worker start"] = "cluster_cli.v1.worker:StartWorker"
COMMANDS["worker status"] = "cluster_cli.v1.worker:WorkerStatus"
COMMANDS["task list"] = "cluster_cli.v1.cluster:ListTasks"
COMMANDS["task show"] = "cluster_cli.v1.cluster:ShowTask"

for _noun in NOUNS:
    for _verb in ("create", "list", "show", "update", "delete"):
        COMMANDS[f"{_noun} {_verb}"] = (
            f"cluster_cli.v1.entities:{_verb.capitalize()}{_noun.capitalize()}"
        )

_TENANCY = {
    "whoami": "WhoAmI",
    "tenant create": "CreateTenant", "tenant list": "ListTenants", "tenant show": "ShowTenant",
    "tenant set": "SetTenant", "tenant delete": "DeleteTenant",
    "user create": "CreateUser", "user list": "ListUsers", "user show": "ShowUser",
    "user set": "SetUser", "user delete": "DeleteUser", "user token": "IssueToken",
    "token list": "ListTokens", "token revoke": "RevokeToken",
    "template share": "ShareTemplate", "template unshare": "UnshareTemplate",
    "template shares": "ListShares",
}
for _name, _cls in _TENANCY.items():
    COMMANDS[_name] = f"cluster_cli.v1.tenancy:{_cls}"
COMMANDS["cluster extend"] = "cluster_cli.v1.cluster:ExtendLease"
