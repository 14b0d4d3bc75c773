"""The ``aws-rds`` database: an RDS DB instance beside a cluster on the ``aws`` provider.

Each database gets its own EC2 security group that admits its port only from the cluster's own
security group (the one its instances are in), never from an address range; the instance is
not publicly accessible. Its identifier derives from the cluster and the resource name, and it
carries the token as a tag, so a create repeated after a crash finds the first database
(``DBInstanceAlreadyExists``) instead of making a second. Waiting is one
``DescribeDBInstances`` (filtered by identifier, a page of 100) per polling round.
"""

import logging
import re

from cluster_server.errors import ProviderError
from cluster_server.plugins import Database, DatabaseInfo, Field, NodeState
from extensions.providers.aws import TAG_CLUSTER, TAG_PROVIDER, TAG_TOKEN, AWSProvider
from extensions.providers.cloud import wait_until

LOG = logging.getLogger(__name__)

TAG_RESOURCE = "shoal:resource"
ENGINE_PORTS = {"postgres": 5432, "mysql": 3306, "mariadb": 3306}
# Statuses of DescribeDBInstances: available is up; these are the cloud saying it failed; any
# other (creating, backing-up, modifying, ...) is still on its way.
STATE_MAP = {"available": NodeState.RUNNING, "failed": NodeState.FAILED,
             "incompatible-network": NodeState.FAILED,
             "incompatible-parameters": NodeState.FAILED,
             "incompatible-restore": NodeState.FAILED, "inaccessible-encryption-credentials":
             NodeState.FAILED, "storage-full": NodeState.FAILED,
             "deleting": NodeState.FAILED, "stopped": NodeState.FAILED}
#: DescribeDBInstances takes at most 100 records a page and 100 filter values.
PAGE = 100


class RDSDatabase(Database):
    providertypes = ("aws",)
    fields = {
        "engine": Field(required=True, help="database engine: postgres, mysql or mariadb",
                        pattern=re.compile("|".join(ENGINE_PORTS)),
                        pattern_help="one of " + ", ".join(ENGINE_PORTS)),
        "class": Field(default="db.t3.micro", help="DB instance class",
                       pattern=re.compile(r"db\.[a-z0-9.]{1,40}"),
                       pattern_help="a DB instance class like db.t3.micro"),
        "storage_gb": Field(default=20, help="allocated storage in GiB",
                            pattern=re.compile(r"[1-9][0-9]{0,4}"),
                            pattern_help="a whole number of GiB"),
        "engine_version": Field(help="engine version (default: RDS's)"),
        "user": Field(default="shoal", help="master user name",
                      pattern=re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}"),
                      pattern_help="a letter, then letters, digits or '_' (at most 16)"),
        "database": Field(default="app", help="name of the database made in it",
                          pattern=re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}"),
                          pattern_help="a letter, then letters, digits or '_'"),
        "port": Field(help="port (default: the engine's)", pattern=re.compile(r"[0-9]{2,5}"),
                      pattern_help="a port number"),
        "subnet_group": Field(help="DB subnet group (needed when the provider's subnet_id is "
                                   "not in the default VPC; default: the default VPC's)"),
    }

    def __init__(self, name, provider, home):
        super().__init__(name, provider, home)
        # The cluster's provider: its credentials, region, VPC and security group.
        self.aws = AWSProvider(provider["name"], provider.get("provisioner") or {}, home)
        self._rds = None

    @property
    def calls(self):
        return self.aws.calls

    def rds(self, operation, **params):
        """One RDS call, at the provider's endpoint_url when it names one (tests: moto, which
        serves every service at one address)."""
        if self._rds is None:
            self._rds = self.aws.client("rds")
        return self.aws.call(self._rds, operation, **params)

    @staticmethod
    def identifier(cluster_id, name):
        # Letters, digits and single hyphens, starting with a letter: c-0123abcd... fits.
        return f"shoal-{cluster_id}-{name}"[:63].rstrip("-")

    @staticmethod
    def group_name(cluster_id, name):
        return f"shoal-{cluster_id}-db-{name}"

    # -- the database's security group ---------------------------------------------------------

    def _group(self, spec, port):
        """The database's own group, admitting ``port`` only from the cluster's group."""
        source = self.aws.cluster_security_group(spec.cluster_id)
        vpc_id = self.aws.vpc_id()
        name = self.group_name(spec.cluster_id, spec.name)
        lookup = [{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
        groups = self.aws.call(self.aws.ec2, "describe_security_groups",
                               Filters=lookup)["SecurityGroups"]
        if groups:
            group_id = groups[0]["GroupId"]
        else:
            try:
                group_id = self.aws.call(
                    self.aws.ec2, "create_security_group", GroupName=name, VpcId=vpc_id,
                    Description=f"Shoal cluster {spec.cluster_id}: database {spec.name} from "
                                "the cluster's instances only",
                    TagSpecifications=self.aws._tags("security-group", spec.cluster_id,
                                                     **{TAG_RESOURCE: spec.name}))["GroupId"]
            except ProviderError as error:
                if error.details.get("code") != "InvalidGroup.Duplicate":
                    raise
                group_id = self.aws.call(self.aws.ec2, "describe_security_groups",
                                         Filters=lookup)["SecurityGroups"][0]["GroupId"]
        try:
            self.aws.call(self.aws.ec2, "authorize_security_group_ingress", GroupId=group_id,
                          IpPermissions=[{"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                                          "UserIdGroupPairs": [{
                                              "GroupId": source,
                                              "Description": "Shoal cluster instances"}]}])
        except ProviderError as error:
            if error.details.get("code") != "InvalidPermission.Duplicate":
                raise
        return group_id

    # -- the plugin ----------------------------------------------------------------------------

    def _instances(self, identifiers=None):
        """DB instances, one call a page: those named, or every one (for ``find``)."""
        batches = [sorted(identifiers)[i:i + PAGE] for i in range(0, len(identifiers), PAGE)] \
            if identifiers is not None else [None]
        for batch in batches:
            marker = None
            while True:
                params = {"MaxRecords": PAGE}
                if batch:
                    params["Filters"] = [{"Name": "db-instance-id", "Values": batch}]
                if marker:
                    params["Marker"] = marker
                page = self.rds("describe_db_instances", **params)
                yield from page.get("DBInstances", [])
                marker = page.get("Marker")
                if not marker:
                    break

    def _info(self, instance):
        tags = {t["Key"]: t["Value"] for t in instance.get("TagList", [])}
        status = instance.get("DBInstanceStatus", "creating")
        endpoint = instance.get("Endpoint") or {}
        info = DatabaseInfo(
            resource_id=instance["DBInstanceIdentifier"],
            state=STATE_MAP.get(status, NodeState.PENDING),
            endpoint=endpoint.get("Address", ""), port=int(endpoint.get("Port") or 0),
            user=instance.get("MasterUsername", ""), database=instance.get("DBName", ""),
            extra={"status": status, "engine": instance.get("Engine", ""),
                   "class": instance.get("DBInstanceClass", ""),
                   "cluster_id": tags.get(TAG_CLUSTER, ""), "name": tags.get(TAG_RESOURCE, ""),
                   "token": tags.get(TAG_TOKEN, ""),
                   "security_groups": [g["VpcSecurityGroupId"]
                                       for g in instance.get("VpcSecurityGroups", [])]})
        if info.state == NodeState.FAILED:
            info.error = f"DB instance {status}"
        if info.state == NodeState.RUNNING and not info.endpoint:
            info.state = NodeState.PENDING  # available but no address yet: not usable
        return info

    def create(self, spec):
        identifier = self.identifier(spec.cluster_id, spec.name)
        for instance in self._instances([identifier]):
            LOG.info("database %s: found %s from an earlier attempt", spec.name, identifier)
            return self._info(instance)
        engine = spec.fields["engine"]
        port = int(spec.fields.get("port") or ENGINE_PORTS[engine])
        group_id = self._group(spec, port)
        params = {
            "DBInstanceIdentifier": identifier, "Engine": engine,
            "DBInstanceClass": spec.fields["class"],
            "AllocatedStorage": int(spec.fields["storage_gb"]),
            "MasterUsername": spec.user or spec.fields["user"],
            "MasterUserPassword": spec.password, "DBName": spec.fields["database"],
            "Port": port, "VpcSecurityGroupIds": [group_id], "PubliclyAccessible": False,
            "Tags": [{"Key": k, "Value": v} for k, v in (
                (TAG_CLUSTER, spec.cluster_id), (TAG_RESOURCE, spec.name),
                (TAG_TOKEN, spec.token), (TAG_PROVIDER, self.aws.name))]}
        if spec.fields.get("subnet_group"):
            params["DBSubnetGroupName"] = str(spec.fields["subnet_group"])
        if spec.fields.get("engine_version"):
            params["EngineVersion"] = str(spec.fields["engine_version"])
        try:
            instance = self.rds("create_db_instance", **params)["DBInstance"]
        except ProviderError as error:
            if error.details.get("code") != "DBInstanceAlreadyExists":
                raise
            # Made by an attempt whose answer was lost: the same identifier, so ours.
            instance = next(iter(self._instances([identifier])))
        LOG.info("database %s: creating %s", spec.name, identifier)
        info = self._info(instance)
        info.extra.update(cluster_id=spec.cluster_id, name=spec.name, token=spec.token)
        return info

    def describe(self, infos):
        wanted = {info.resource_id for info in infos}
        seen = {instance["DBInstanceIdentifier"]: self._info(instance)
                for instance in self._instances(wanted)}
        return {resource_id: seen.get(resource_id) or DatabaseInfo(
                    resource_id=resource_id, state=NodeState.GONE, error="no such DB instance")
                for resource_id in wanted}

    def delete(self, info):
        try:
            self.rds("delete_db_instance", DBInstanceIdentifier=info.resource_id,
                     SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
        except ProviderError as error:
            if error.details.get("code") not in ("DBInstanceNotFound", "DBInstanceNotFoundFault",
                                                  "InvalidDBInstanceState"):
                raise
        LOG.info("deleting database %s", info.resource_id)

    def release(self, info):
        """The database is gone: delete its security group (an interface of the database may
        hold it for a while: DependencyViolation until then)."""
        cluster_id, name = info.extra.get("cluster_id"), info.extra.get("name")
        if not cluster_id or not name:
            return
        groups = self.aws.call(self.aws.ec2, "describe_security_groups", Filters=[
            {"Name": "group-name", "Values": [self.group_name(cluster_id, name)]}])[
            "SecurityGroups"]
        for group in groups:
            wait_until(lambda: self.aws._delete_group(group["GroupId"]),
                       f"security group {group['GroupId']} to be free", LOG)

    def find(self, cluster_id):
        prefix = f"shoal-{cluster_id}-"
        return [self._info(instance) for instance in self._instances()
                if instance["DBInstanceIdentifier"].startswith(prefix)]
