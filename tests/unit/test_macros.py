"""Macro expansion: every form of the macro language and every macro of the reference catalog."""

import copy
import json
import pathlib
import re

import pytest

from cluster_server.errors import ValidationError
from cluster_server.macros import expand, prepare, validate

ROOT = pathlib.Path(__file__).resolve().parents[2]
COOPR = next((p for p in (ROOT / "tests" / "data" / "coopr-catalog",
                          ROOT.parent / "shared" / "reference" / "coopr-catalog") if p.is_dir()),
             None)


def node(number, *services):
    return {"id": f"n{number}", "hostname": f"h{number}.example", "services": list(services),
            "addresses": {"bind_v4": f"10.0.0.{number}", "access_v4": f"192.0.2.{number}"}}


# Given out of order on purpose: n10 must sort after n2.
CTX = {"cluster": {"id": "00000042", "name": "demo", "owner": "alice"}, "self": "n2",
       "nodes": [node(10, "zk", "web"), node(1, "lb", "db"), node(2, "zk", "web")]}


@pytest.mark.parametrize("text,expected", [
    ("%host.service.lb%", "h1.example"),
    ("%host.service.zk%", "h2.example,h10.example"),
    ("%ip.service.zk%", "10.0.0.2,10.0.0.10"),
    ("%ip.bind_v4.service.zk%", "10.0.0.2,10.0.0.10"),
    ("%ip.access_v4.service.zk%", "192.0.2.2,192.0.2.10"),
    ("%num.service.zk%", "2"),
    ("%num.service.lb%", "1"),
    ("%host.self%", "h2.example"),
    ("%ip.self%", "10.0.0.2"),
    ("%ip.bind_v4.self%", "10.0.0.2"),
    ("%ip.access_v4.self%", "192.0.2.2"),
    ("%instance.self.service.zk%", "1"),
    ("%host.service.zk[0]%", "h2.example"),
    ("%host.service.zk[1]%", "h10.example"),
    ("%ip.access_v4.service.web[1]%", "192.0.2.10"),
    ("%join(host.service.zk,' ')%", "h2.example h10.example"),
    ("%join(map(host.service.zk,'$:2181'),',')%", "h2.example:2181,h10.example:2181"),
    ('%join(map(ip.service.zk,"$"),";")%', "10.0.0.2;10.0.0.10"),
    ("%map(host.service.zk,'zk://$')%", "zk://h2.example,zk://h10.example"),
    ("%cluster.id%", "00000042"),
    ("%cluster.name%", "demo"),
    ("%cluster.owner%", "alice"),
    ("hdfs://%host.service.lb%:8020/%cluster.name%", "hdfs://h1.example:8020/demo"),
    ("%host.self%%ip.self%", "h2.example10.0.0.2"),
])
def test_each_macro_form(text, expected):
    assert expand(text, CTX) == expected


def test_instance_counts_from_one_in_natural_node_order():
    ctx = dict(CTX, self="n10")
    assert expand("%instance.self.service.zk%", ctx) == "2"
    ctx = {"cluster": {}, "self": "n10",
           "nodes": [node(i, "zk") for i in (10, 9, 1, 2)]}
    assert expand("%instance.self.service.zk%", ctx) == "4"
    assert expand("%host.service.zk%", ctx) == "h1.example,h2.example,h9.example,h10.example"


def test_service_with_no_node_expands_to_empty_and_is_reported():
    missing = []
    value = {"a": "thrift://%host.service.hive-metastore%:9083",
             "b": "%join(map(ip.bind_v4.service.hive-metastore,'thrift://$:9083'),',')%",
             "c": "%ip.access_v4.service.ghost%", "d": "%num.service.ghost%"}
    assert expand(value, CTX, missing) == {"a": "thrift://:9083", "b": "", "c": "", "d": "0"}
    assert missing == ["hive-metastore", "ghost"]
    assert expand("%host.service.ghost%", CTX) == ""


def test_index_past_the_end_and_instance_of_a_service_self_lacks_are_reported():
    missing = []
    assert expand("%host.service.lb[1]%", CTX, missing) == ""
    assert expand("%instance.self.service.db%", CTX, missing) == ""
    assert missing == ["lb", "db"]


@pytest.mark.parametrize("text", [
    "100%", "50% and 20%", "%", "%%", "100%%", "%d %s", "%H:%M:%S", "date +%Y-%m-%d",
    "%foo.bar%", "%hostname%", "%JAVA_HOME%", "%{http_code}", "-Xmx%dm", "%self%",
])
def test_text_that_is_not_a_macro_is_left_as_is(text):
    assert expand(text, CTX) == text


@pytest.mark.parametrize("text", [
    "%host.service.%", "%host.servise.zk%", "%host.self", "%ip.external.service.zk%",
    "%num.service.zk[0]%", "%host.self[0]%", "%host.service.zk[x]%", "%cluster.size%",
    "%join(host.service.zk)%", "%join(host.service.zk,',')", "%join(host.service.zk,',' )%",
    "%join(map(host.service.zk,$),',')%", "%map(host.service.zk,'$%", "%instance.self%",
])
def test_malformed_macro_is_a_validation_error(text):
    with pytest.raises(ValidationError, match="Malformed macro"):
        expand(text, CTX)
    with pytest.raises(ValidationError):
        validate({"x": [text]})


def test_values_are_inserted_as_plain_text():
    ctx = {"cluster": {"id": "1", "name": "a'b; rm -rf /", "owner": "$(whoami)"}, "self": "n1",
           "nodes": [{"id": "n1", "hostname": "h 1", "services": [], "addresses": {}}]}
    assert expand("%cluster.name% %cluster.owner% [%host.self%] [%ip.self%]", ctx) == \
        "a'b; rm -rf / $(whoami) [h 1] []"


def test_shape_is_kept_and_input_untouched():
    value = {"%host.self%": ["%host.self%", ("%ip.self%", 3)], "n": 5, "b": True, "z": None,
             "deep": {"list": [{"x": "%num.service.zk%"}]}}
    before = copy.deepcopy(value)
    assert expand(value, CTX) == {"%host.self%": ["h2.example", ("10.0.0.2", 3)], "n": 5,
                                  "b": True, "z": None, "deep": {"list": [{"x": "2"}]}}
    assert value == before


def test_self_not_in_the_cluster_is_an_error():
    with pytest.raises(ValidationError, match="n99"):
        expand("%host.self%", dict(CTX, self="n99"))


# --- the Coopr reference catalog ----------------------------------------------------------------

MACRO = re.compile(r"%(?:join|map|host|ip|num|instance|cluster)[(.][^%]*%")


def coopr_files():
    if COOPR is None:
        pytest.skip("the Coopr reference catalog is not available")
    return sorted((COOPR / "clustertemplates").glob("*.json")) + \
        sorted((COOPR / "services").glob("*.json"))


def coopr_context():
    """Every service named by a reference macro is on a node; zookeeper on three of them."""
    master = ["hadoop-hdfs-namenode", "hadoop-yarn-resourcemanager", "hbase-master",
              "hadoop-mapreduce-historyserver", "mysql-server", "ambari-server", "apache-httpd",
              "cdap", "cdap-sandbox-docker", "coopr", "dcos-master", "mongodb-single",
              "spark-master", "zookeeper-server"]
    return {"cluster": {"id": "7", "name": "hadoop", "owner": "alice"}, "self": "n2",
            "nodes": [node(1, *master), node(2, "zookeeper-server", "hive-metastore", "cdap"),
                      node(10, "zookeeper-server", "hive-metastore")]}


# Every distinct macro form found in the reference templates and services, with its value in
# coopr_context(). A new form in the catalog makes test_reference_forms_are_all_listed fail.
REFERENCE = {
    "%host.service.ambari-server%": "h1.example",
    "%host.service.hadoop-hdfs-namenode%": "h1.example",
    "%host.service.hadoop-yarn-resourcemanager%": "h1.example",
    "%host.service.mysql-server%": "h1.example",
    "%host.service.spark-master%": "h1.example",
    "%ip.access_v4.service.ambari-server%": "192.0.2.1",
    "%ip.access_v4.service.apache-httpd%": "192.0.2.1",
    "%ip.access_v4.service.cdap%": "192.0.2.1,192.0.2.2",
    "%ip.access_v4.service.cdap-sandbox-docker%": "192.0.2.1",
    "%ip.access_v4.service.coopr%": "192.0.2.1",
    "%ip.access_v4.service.dcos-master%": "192.0.2.1",
    "%ip.access_v4.service.hadoop-hdfs-namenode%": "192.0.2.1",
    "%ip.access_v4.service.hadoop-mapreduce-historyserver%": "192.0.2.1",
    "%ip.access_v4.service.hadoop-yarn-resourcemanager%": "192.0.2.1",
    "%ip.access_v4.service.hbase-master%": "192.0.2.1",
    "%ip.bind_v4.self%": "10.0.0.2",
    "%ip.bind_v4.service.dcos-master%": "10.0.0.1",
    "%ip.bind_v4.service.hadoop-mapreduce-historyserver%": "10.0.0.1",
    "%ip.bind_v4.service.mongodb-single%": "10.0.0.1",
    "%ip.bind_v4.service.mysql-server%": "10.0.0.1",
    "%join(map(host.service.cdap,'$:9092'),',')%": "h1.example:9092,h2.example:9092",
    "%join(map(host.service.zookeeper-server,'$'),',')%": "h1.example,h2.example,h10.example",
    "%join(map(host.service.zookeeper-server,'$:2181'),',')%":
        "h1.example:2181,h2.example:2181,h10.example:2181",
    "%join(map(ip.bind_v4.service.hive-metastore,'thrift://$:9083'),',')%":
        "thrift://10.0.0.2:9083,thrift://10.0.0.10:9083",
}


def test_reference_forms_are_all_listed():
    found = {m for path in coopr_files() for m in MACRO.findall(path.read_text())}
    assert found == set(REFERENCE)


@pytest.mark.parametrize("macro", sorted(REFERENCE))
def test_reference_macro_expands(macro):
    missing = []
    assert expand(macro, coopr_context(), missing) == REFERENCE[macro]
    assert missing == []


def test_every_reference_entity_expands_completely():
    ctx = coopr_context()
    for path in coopr_files():
        entity = json.loads(path.read_text())
        validate(entity)
        missing = []
        expanded = json.dumps(expand(entity, ctx, missing))
        assert missing == [], path.name
        assert not MACRO.search(expanded), path.name
    template = json.loads((COOPR / "clustertemplates" / "hadoop-distributed.json").read_text())
    config = expand(template["defaults"]["config"], ctx)
    assert config["hbase"]["hbase_site"]["hbase.zookeeper.quorum"] == \
        "h1.example:2181,h2.example:2181,h10.example:2181"
    assert config["hadoop"]["core_site"]["fs.defaultFS"] == "hdfs://h1.example"
    assert config["hadoop"]["hdfs_site"]["dfs.namenode.rpc-bind-host"] == "10.0.0.2"


def test_a_prepared_context_expands_as_the_plain_one_from_every_node():
    text = ("%host.self% %instance.self.service.zk% %join(map(ip.service.web,'$:80'),' ')% "
            "%num.service.db% %cluster.name%")
    prepared = prepare({"nodes": CTX["nodes"]})
    for node_id in ("n1", "n2", "n10"):
        ctx = {"cluster": CTX["cluster"], "self": node_id, "nodes": CTX["nodes"]}
        bound = prepared.bound({"cluster": CTX["cluster"], "self": node_id})
        assert expand(text, bound, []) == expand(text, ctx, [])
    with pytest.raises(ValidationError, match="n7"):
        expand("%host.self%", prepared.bound({"self": "n7"}))
