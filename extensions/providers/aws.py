"""The ``aws`` provider: EC2 instances through boto3.

Per cluster: a key pair (the public half of a key made in ``SHOAL_HOME/keys``) and a security
group that opens SSH to ``ssh_cidr`` only. Every instance is launched with the node's token as
its ClientToken and tagged with its cluster, node and token, so a create repeated after a crash
finds the first instance instead of making a second. Waiting is one ``DescribeInstances`` per page
per polling round for all pending nodes.
"""

import collections
import hashlib
import logging
import threading
import time

from cluster_server import clouds
from cluster_server.errors import PluginError, ProviderError
from cluster_server.plugins import Field, NodeInfo, NodeState, Provider
from extensions.providers.cloud import (SSH_FIELDS, ClusterKeys, SSHAccess, gib,
                                       image_and_flavor, ssh_cidrs, truthy, wait_until)

LOG = logging.getLogger(__name__)

TAG_CLUSTER, TAG_NODE, TAG_TOKEN, TAG_PROVIDER = ("shoal:cluster", "shoal:node", "shoal:token",
                                                  "shoal:provider")
STATE_MAP = {"pending": NodeState.PENDING, "running": NodeState.RUNNING,
             "shutting-down": NodeState.FAILED, "terminated": NodeState.FAILED,
             "stopping": NodeState.FAILED, "stopped": NodeState.FAILED}
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
DATA_DEVICE = "/dev/sdf"  # aws_ebs_size's volume (Coopr's name for it)
#: DescribeInstances takes at most 200 filter values per call.
FILTER_VALUES = 200
#: A new instance may be missing from DescribeInstances for a moment (eventual consistency).
CONSISTENCY_GRACE = 120.0


def _csv(value):
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]


class AWSProvider(Provider):
    """EC2 instances, one security group and one key pair per cluster."""

    unsupported = {
        "ssh_keypair": "Shoal makes and keeps a key pair per cluster",
        "ssh_key_resource": "Shoal makes and keeps a key pair per cluster",
    }

    fields = {
        "aws_region": Field(help="region (default: the one 'shoal setup aws' recorded)"),
        "api_user": Field(sensitive=True, help="access key id (default: the AWS profile or "
                                               "environment that 'shoal setup aws' chose)"),
        "api_password": Field(sensitive=True, help="secret access key"),
        "api_session_token": Field(sensitive=True, help="session token for temporary keys"),
        "aws_profile": Field(help="profile of the AWS config files to use"),
        "endpoint_url": Field(help="EC2 endpoint (tests: a moto server on loopback)"),
        "subnet_id": Field(help="subnet to launch in (default: the default VPC)"),
        "security_group_ids": Field(help="more security groups for every instance, "
                                         "comma-separated"),
        "iam_instance_profile": Field(help="instance profile name or ARN"),
        "security_groups": Field(help="more security groups for every instance, by name (in "
                                      "the cluster's VPC), comma-separated"),
        "aws_root_ebs_size": Field(help="root volume size in GiB (default: the image's)"),
        "aws_root_ebs_delete_on_term": Field(default=True, help="delete the root volume with "
                                                                "the instance"),
        "aws_ebs_size": Field(help=f"a data volume of this many GiB on every node "
                                   f"({DATA_DEVICE})"),
        "aws_ebs_delete_on_term": Field(default=True, help="delete the data volume with the "
                                                           "instance"),
        "availability_zone": Field(help="availability zone"),
        "placement_group": Field(help="placement group to launch the instances in"),
        "dedicated_instance": Field(help="true: instances run on single-tenant hardware"),
        "associate_public_ip": Field(help="give instances in subnet_id a public address"),
        "describe_page_size": Field(default=1000, help="instances per DescribeInstances page"),
        **SSH_FIELDS,
    }

    def __init__(self, name, fields, home):
        super().__init__(name, fields or {}, home)
        self.keys = ClusterKeys(home, name)
        self.ssh = SSHAccess(self, self.keys, default_user="ec2-user")
        self.page_size = max(5, min(1000, int(self.config.get("describe_page_size") or 1000)))
        self.calls = collections.Counter()  # EC2 API calls by operation (tests, benchmarks)
        self._client = None
        self._lock = threading.Lock()
        self._cluster_locks = collections.defaultdict(threading.Lock)
        self._cluster_resources = {}  # cluster id -> {"group_id", "key_name"}
        self._root_devices = {}  # image id -> root device name
        self._named_groups = None  # ids of the security_groups field's names, once looked up

    # -- the EC2 client --------------------------------------------------------------------------

    @property
    def ec2(self):
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self):
        from botocore.config import Config

        setup = clouds.recorded(self.home, "aws")
        explicit = self.config.get("api_user") and self.config.get("api_password")
        session = clouds.aws_session(
            profile=None if explicit else (self.config.get("aws_profile") or setup.get("profile")),
            region=self.config.get("aws_region") or setup.get("region"),
            access_key=self.config.get("api_user"), secret_key=self.config.get("api_password"),
            session_token=self.config.get("api_session_token"))
        if not session.region_name:
            raise PluginError(f"provider '{self.name}': no AWS region: set aws_region or run "
                              "'shoal setup aws --region R'",
                              {"entity": "provider", "name": self.name, "field": "aws_region"})
        endpoint = self.config.get("endpoint_url") or setup.get("endpoint_url") or None
        config = Config(retries={"mode": "standard", "max_attempts": 4},
                        max_pool_connections=16, connect_timeout=10, read_timeout=60)
        return session.client("ec2", endpoint_url=endpoint, config=config)

    def _call(self, operation, **params):
        """One EC2 call; its errors become ProviderError (PluginError when credentials lack)."""
        import botocore.exceptions

        self.calls[operation] += 1
        try:
            return getattr(self.ec2, operation)(**params)
        except botocore.exceptions.NoCredentialsError:
            raise PluginError(f"provider '{self.name}': no AWS credentials: run 'shoal setup "
                              "aws' or set api_user and api_password",
                              {"entity": "provider", "name": self.name}) from None
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise ProviderError(f"aws {operation}: {error.get('Code')}: {error.get('Message')}",
                                {"provider": self.name, "operation": operation,
                                 "code": error.get("Code")}) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise ProviderError(f"aws {operation}: {exc}",
                                {"provider": self.name, "operation": operation}) from None

    @staticmethod
    def _code(error):
        return error.details.get("code") or ""

    def _instances(self, filters):
        """Every instance matching ``filters``, one call per page."""
        token = None
        while True:
            params = {"Filters": filters, "MaxResults": self.page_size}
            if token:
                params["NextToken"] = token
            page = self._call("describe_instances", **params)
            for reservation in page.get("Reservations", []):
                yield from reservation.get("Instances", [])
            token = page.get("NextToken")
            if not token:
                return

    # -- per-cluster resources -------------------------------------------------------------------

    def _names(self, cluster_id):
        return f"shoal-{cluster_id}"

    def _tags(self, kind, cluster_id, **more):
        tags = {TAG_CLUSTER: cluster_id, TAG_PROVIDER: self.name, **more}
        return [{"ResourceType": kind,
                 "Tags": [{"Key": k, "Value": str(v)} for k, v in tags.items()]}]

    def _vpc_id(self):
        subnet = self.config.get("subnet_id")
        if subnet:
            found = self._call("describe_subnets", SubnetIds=[subnet])["Subnets"]
            return found[0]["VpcId"]
        vpcs = self._call("describe_vpcs",
                          Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise PluginError(f"provider '{self.name}': the region has no default VPC; set "
                              "subnet_id", {"entity": "provider", "name": self.name,
                                            "field": "subnet_id"})
        return vpcs[0]["VpcId"]

    def _cluster(self, cluster_id):
        """The cluster's key pair and security group, made on first use (idempotently: a
        crash between any two steps is repaired by the next call)."""
        with self._cluster_locks[cluster_id]:
            known = self._cluster_resources.get(cluster_id)
            if known:
                return known
            cidrs = ssh_cidrs(self)
            name = self._names(cluster_id)
            public = self.keys.ensure(cluster_id)  # on disk before the cloud knows of it
            try:
                self._call("import_key_pair", KeyName=name, PublicKeyMaterial=public.encode(),
                           TagSpecifications=self._tags("key-pair", cluster_id))
            except ProviderError as error:
                if self._code(error) != "InvalidKeyPair.Duplicate":
                    raise
                existing = self._call("describe_key_pairs", KeyNames=[name],
                                      IncludePublicKey=True)["KeyPairs"]
                if existing and existing[0].get("PublicKey", "").split()[:2] != \
                        public.split()[:2]:
                    # Not our key (ours was lost): nodes made with it could not be reached.
                    self._call("delete_key_pair", KeyName=name)
                    self._call("import_key_pair", KeyName=name,
                               PublicKeyMaterial=public.encode(),
                               TagSpecifications=self._tags("key-pair", cluster_id))
            vpc_id = self._vpc_id()
            groups = self._call("describe_security_groups", Filters=[
                {"Name": "group-name", "Values": [name]},
                {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
            if groups:
                group_id = groups[0]["GroupId"]
            else:
                try:
                    group_id = self._call(
                        "create_security_group", GroupName=name, VpcId=vpc_id,
                        Description=f"Shoal cluster {cluster_id}: SSH from {', '.join(cidrs)}",
                        TagSpecifications=self._tags("security-group", cluster_id))["GroupId"]
                except ProviderError as error:
                    if self._code(error) != "InvalidGroup.Duplicate":
                        raise
                    group_id = self._call("describe_security_groups", Filters=[
                        {"Name": "group-name", "Values": [name]},
                        {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"][0]["GroupId"]
            try:
                self._call("authorize_security_group_ingress", GroupId=group_id, IpPermissions=[{
                    "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                    "IpRanges": [{"CidrIp": c, "Description": "Shoal SSH"}
                                 for c in cidrs if ":" not in c],
                    "Ipv6Ranges": [{"CidrIpv6": c, "Description": "Shoal SSH"}
                                   for c in cidrs if ":" in c]}])
            except ProviderError as error:
                if self._code(error) != "InvalidPermission.Duplicate":
                    raise
            known = self._cluster_resources[cluster_id] = {"group_id": group_id,
                                                           "key_name": name}
            return known

    # -- nodes -----------------------------------------------------------------------------------

    @staticmethod
    def client_token(token):
        """EC2 takes at most 64 ASCII characters."""
        return token if len(token) <= 64 else hashlib.sha256(token.encode()).hexdigest()

    def _groups_named(self, names):
        """The ids of the security groups ``names`` in the cluster's VPC (looked up once, not
        per node)."""
        if not names:
            return []
        if self._named_groups is not None:
            return self._named_groups
        found = {g["GroupName"]: g["GroupId"] for g in self._call(
            "describe_security_groups", Filters=[{"Name": "group-name", "Values": names},
                                                 {"Name": "vpc-id", "Values": [self._vpc_id()]}]
        )["SecurityGroups"]}
        missing = [name for name in names if name not in found]
        if missing:
            raise PluginError(f"provider '{self.name}': security_groups: no group named "
                              f"{', '.join(missing)} in the VPC",
                              {"entity": "provider", "name": self.name,
                               "field": "security_groups", "missing": missing})
        self._named_groups = [found[name] for name in names]
        return self._named_groups

    def _root_device(self, image_id):
        if image_id not in self._root_devices:
            images = self._call("describe_images", ImageIds=[image_id])["Images"]
            if not images:
                raise ProviderError(f"aws: image {image_id} not found", {"image": image_id})
            self._root_devices[image_id] = images[0].get("RootDeviceName") or "/dev/xvda"
        return self._root_devices[image_id]

    def create(self, spec):
        # Everything that can be refused is checked before anything is made.
        image_id, instance_type = image_and_flavor(self, spec)
        volumes = []
        for key, device in (("aws_root_ebs", None), ("aws_ebs", DATA_DEVICE)):
            size = gib(self, f"{key}_size")
            if size:
                volumes.append({"DeviceName": device or self._root_device(image_id),
                                "Ebs": {"VolumeSize": size, "DeleteOnTermination": truthy(
                                    self.config.get(f"{key}_delete_on_term", True))}})
        named = self._groups_named(_csv(self.config.get("security_groups")))
        # An instance launched before a crash carries our token: it is this node.
        for instance in self._instances([{"Name": f"tag:{TAG_TOKEN}", "Values": [spec.token]}]):
            LOG.info("node %s: found %s from an earlier attempt", spec.node_id,
                     instance["InstanceId"])
            return self._info(instance, spec=spec)
        resources = self._cluster(spec.cluster_id)
        groups = [resources["group_id"], *_csv(self.config.get("security_group_ids")), *named]
        params = {
            "ImageId": image_id, "InstanceType": instance_type, "MinCount": 1, "MaxCount": 1,
            "ClientToken": self.client_token(spec.token), "KeyName": resources["key_name"],
            "TagSpecifications": self._tags(
                "instance", spec.cluster_id, **{TAG_NODE: spec.node_id, TAG_TOKEN: spec.token,
                                                "Name": spec.hostname}),
        }
        subnet = self.config.get("subnet_id")
        if subnet and self.config.get("associate_public_ip") not in (None, ""):
            params["NetworkInterfaces"] = [{
                "DeviceIndex": 0, "SubnetId": subnet, "Groups": groups,
                "AssociatePublicIpAddress": str(self.config["associate_public_ip"]).lower()
                in ("1", "true", "yes")}]
        else:
            params["SecurityGroupIds"] = groups
            if subnet:
                params["SubnetId"] = subnet
        profile = self.config.get("iam_instance_profile")
        if profile:
            params["IamInstanceProfile"] = ({"Arn": profile} if profile.startswith("arn:")
                                            else {"Name": profile})
        placement = {"AvailabilityZone": self.config.get("availability_zone"),
                     "GroupName": self.config.get("placement_group"),
                     "Tenancy": "dedicated" if truthy(self.config.get("dedicated_instance", ""))
                     else None}
        if any(placement.values()):
            params["Placement"] = {key: value for key, value in placement.items() if value}
        if volumes:
            params["BlockDeviceMappings"] = volumes
        instance = self._call("run_instances", **params)["Instances"][0]
        LOG.info("node %s: launched %s", spec.node_id, instance["InstanceId"])
        return self._info(instance, spec=spec)

    def _info(self, instance, spec=None, previous=None):
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        cluster_id = tags.get(TAG_CLUSTER) or (spec.cluster_id if spec else "")
        node_id = tags.get(TAG_NODE) or (spec.node_id if spec else "")
        state_name = instance.get("State", {}).get("Name", "pending")
        private = instance.get("PrivateIpAddress") or ""
        public = instance.get("PublicIpAddress") or ""
        if previous is not None:
            ssh = {**previous.ssh, **self.ssh.facts(cluster_id, node_id, public or private,
                                                    {"sshuser": previous.ssh.get("user")})}
            extra = dict(previous.extra)
        else:
            ssh = self.ssh.facts(cluster_id, node_id, public or private,
                                 spec.image if spec else None)
            extra = {"created_at": time.time()}
        extra.update({"cluster_id": cluster_id, "node_id": node_id,
                      "token": tags.get(TAG_TOKEN, spec.token if spec else ""),
                      "instance_state": state_name,
                      "instance_type": instance.get("InstanceType", ""),
                      "private_dns": instance.get("PrivateDnsName", "")})
        info = NodeInfo(resource_id=instance["InstanceId"],
                        state=STATE_MAP.get(state_name, NodeState.PENDING),
                        hostname=(spec.hostname if spec else tags.get("Name", "")) or
                        (previous.hostname if previous else ""),
                        addresses={"bind_v4": private, "access_v4": public or private},
                        ssh=ssh, extra=extra)
        if info.state == NodeState.FAILED:
            reason = (instance.get("StateReason") or {}).get("Message") or \
                instance.get("StateTransitionReason") or ""
            info.error = f"instance {state_name}" + (f": {reason}" if reason else "")
        return info

    def describe(self, infos):
        """One DescribeInstances per page, whatever the number of nodes: filtered by instance
        id for up to 200 nodes (the most filter values a call takes), else by their clusters'
        tag (then every instance of those clusters is listed, 1,000 a page)."""
        wanted = {info.resource_id: info for info in infos}
        if len(wanted) <= FILTER_VALUES:
            queries = [[{"Name": "instance-id", "Values": sorted(wanted)}]]
        else:
            clusters = sorted({info.extra.get("cluster_id", "") for info in infos})
            queries = [[{"Name": f"tag:{TAG_CLUSTER}", "Values": clusters[i:i + FILTER_VALUES]}]
                       for i in range(0, len(clusters), FILTER_VALUES)]
        seen = {}
        for filters in queries:
            for instance in self._instances(filters):
                previous = wanted.get(instance["InstanceId"])
                if previous is not None:
                    seen[previous.resource_id] = self._info(instance, previous=previous)
        result = {}
        for resource_id, info in wanted.items():
            if resource_id in seen:
                result[resource_id] = seen[resource_id]
            elif time.time() - info.extra.get("created_at", 0) > CONSISTENCY_GRACE:
                result[resource_id] = NodeInfo(resource_id=resource_id, state=NodeState.GONE,
                                               extra=dict(info.extra))
        self.ssh.pin(list(seen.values()))
        return result

    def delete(self, info):
        """Terminate the instance; CLEANUP waits for it to be gone."""
        try:
            self._call("terminate_instances", InstanceIds=[info.resource_id])
        except ProviderError as error:
            if not self._code(error).startswith("InvalidInstanceID"):
                raise
        LOG.info("terminating %s", info.resource_id)

    def find(self, cluster_id):
        return [self._info(instance) for instance in self._instances([
            {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]},
            {"Name": "instance-state-name", "Values": LIVE_STATES}])]

    def inventory(self, cluster_ids):
        """Every instance not terminated tagged with one of ``cluster_ids``: one
        DescribeInstances per page (1,000 instances) for up to 200 clusters at once."""
        result = {cluster_id: [] for cluster_id in cluster_ids}
        ordered = sorted(result)
        for i in range(0, len(ordered), FILTER_VALUES):
            for instance in self._instances([
                    {"Name": f"tag:{TAG_CLUSTER}", "Values": ordered[i:i + FILTER_VALUES]},
                    {"Name": "instance-state-name", "Values": LIVE_STATES}]):
                info = self._info(instance)
                if info.extra["cluster_id"] in result:
                    result[info.extra["cluster_id"]].append(info)
        return result

    def cleanup_cluster(self, cluster_id):
        """Wait until every instance of the cluster is terminated, then delete its security
        group and key pair (a group still in use cannot be deleted)."""

        def terminated():
            live = list(self._instances([
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]},
                {"Name": "instance-state-name", "Values": LIVE_STATES}]))
            for instance in live:
                if instance["State"]["Name"] != "shutting-down":
                    self.delete(NodeInfo(resource_id=instance["InstanceId"]))
            return not live

        wait_until(terminated, f"the instances of cluster {cluster_id} to terminate", LOG)
        groups = self._call("describe_security_groups", Filters=[
            {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster_id]}])["SecurityGroups"]
        for group in groups:
            wait_until(lambda: self._delete_group(group["GroupId"]),
                       f"security group {group['GroupId']} to be free", LOG)
        self._call("delete_key_pair", KeyName=self._names(cluster_id))
        self.keys.remove(cluster_id)
        self._cluster_resources.pop(cluster_id, None)

    def _delete_group(self, group_id):
        try:
            self._call("delete_security_group", GroupId=group_id)
        except ProviderError as error:
            if self._code(error) == "InvalidGroup.NotFound":
                return True
            if self._code(error) == "DependencyViolation":  # network interfaces linger a bit
                return False
            raise
        return True

    def transport(self, info):
        return self.ssh.transport(info)
