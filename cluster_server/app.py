"""The Flask app factory: the store, who is asking and what they may do, the blueprints and the
one error shape."""

import logging
import traceback

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from cluster_server import catalog, config, tenancy
from cluster_server.contract import limits, params
from cluster_server.errors import ShoalError
from cluster_server.store import Store
from cluster_server.tenancy import policy

LOG = logging.getLogger("shoal.server")


def seed_default_catalog(store):
    """Import the shipped catalog (local-web, local-kv on the local provider) once per home.

    Only once: a user who deletes those entries does not get them back at the next start.
    """
    if store.setting("default_catalog_imported"):
        return
    entities = catalog.read_directory(catalog.DEFAULT_CATALOG)
    catalog.validate_all(entities)
    with store.write():
        existing = store.catalog_all()
        store.catalog_put([(kind, body) for kind, body in entities
                           if body["name"] not in existing.get(kind, {})])
        store.set_setting("default_catalog_imported", True)


def create_app(home=None, token=None, start_engine=True, seed=True):
    """Build the app for the Shoal home ``home`` (default SHOAL_HOME).

    ``start_engine=False`` gives an app that serves the catalog and plans but runs nothing:
    unit tests of the API use it. ``seed=False`` starts with an empty catalog.
    """
    app = Flask("shoal")
    app.config["SHOAL_HOME"] = home or config.home()
    app.config["SHOAL_TOKEN"] = token or config.ensure_token(app.config["SHOAL_HOME"])
    app.config["JSON_SORT_KEYS"] = False
    app.store = Store(app.config["SHOAL_HOME"] / "shoal.db")
    if seed:
        seed_default_catalog(app.store)
    app.engine = app.janitor = None
    app.health = None
    if start_engine:
        from cluster_server.engine import Engine
        from cluster_server.health.monitor import Monitor
        from cluster_server.tenancy.janitor import Janitor

        app.engine = Engine(app.store, app.config["SHOAL_HOME"])
        app.engine.start()
        app.health = Monitor(app.store, app.engine)
        app.health.start()
        # After the engine resumed what was running: the janitor's first pass deletes what
        # expired while the server was down.
        app.janitor = Janitor(app.store, app.engine).start()
    from cluster_server.health import metrics

    app.metrics = metrics.registry(app.store, app.engine, app.health)

    from cluster_server.api import (catalog, clusters, envshell, health, live, meta, resources,
                                    workers)
    from cluster_server.api import tenancy as tenancy_api

    # tenancy first: its static paths (/tenants, /users) are not catalog collections.
    for module in (meta, tenancy_api, catalog, clusters, health, resources, envshell, workers,
                   live):
        app.register_blueprint(module.bp, url_prefix="/api/v1")

    from cluster_server import ui  # the web UI under /ui/: its own session check

    app.register_blueprint(ui.bp)

    from cluster_server.api import setup as cloud_setup  # shoal setup aws|gcp

    app.register_blueprint(cloud_setup.bp, url_prefix="/api/v1")

    @app.before_request
    def check_principal():
        if request.blueprint == ui.bp.name:
            return  # pages and assets: the UI checks its session cookie itself
        principal = None
        if not request.headers.get("Authorization"):
            # A browser of the web UI: its session cookie (and CSRF token) stand for the
            # principal whose token asked for the login link.
            principal = ui.sessions.principal_from_cookie(request)
        g.principal = principal or tenancy.authenticate(request)
        g.tenant = g.principal.tenant

    @app.before_request
    def check_contract():
        # After the token: a caller without it learns nothing of the contract's limits.
        view = app.view_functions.get(request.endpoint)
        if view is None or request.blueprint == ui.bp.name:  # 404, 405: routing refused it;
            return                                          # the UI's pages have no contract
        if request.method == "OPTIONS":
            # Flask's own answer lists the methods of every rule the path matches, also
            # PUT /<plural>/<name> for /catalog/check; list those that serve it.
            fully, loosely = _methods_serving(app, request.path)
            allowed = fully or loosely
            response = app.make_response(("", 200))
            response.headers["Allow"] = ", ".join(
                allowed + ["HEAD"] * ("GET" in allowed) + ["OPTIONS"])
            return response
        misfit = params.path_misfit(view, request.view_args)
        if misfit:
            # PUT /catalog/import matches PUT /<plural>/<name>, with a plural that is none, and
            # PUT /resources/k/n/activate the upload's <path:name>: when another route serves
            # the path, answer as routing would, 405 naming its methods. Otherwise the view
            # (an enum: its own error names what it accepts) or check_path (a name) says why.
            # A route misfit yields to any route for the path; a name misfit only to a route
            # where every value fits (PUT /resources/k/n/activate is no upload of "n/activate").
            fully, loosely = _methods_serving(app, request.path)
            allowed = [method for method in (fully or loosely if misfit == "route" else fully)
                       if method != request.method]
            if allowed:
                raise MethodNotAllowed(valid_methods=allowed)
        params.check_path(view, request.view_args, request.method)
        # What the role allows (403), and what is not the caller's (404), before any view.
        policy.authorize(g.principal, app.store, request.endpoint, request.view_args,
                         what=f"{request.method} {request.path}")
        params.check_query(view, request.args)
        limit, setting = limits.body_limit(view)
        limits.check_length(request.content_length, limit, setting)
        # A body without Content-Length (chunked): Werkzeug stops reading at the limit (413).
        request.max_content_length = limit

    @app.errorhandler(ShoalError)
    def shoal_error(error):
        return jsonify(error.to_dict()), error.status

    @app.errorhandler(HTTPException)
    def http_error(error):
        body = {"error": {"code": error.name.lower().replace(" ", "_"),
                          "message": error.description, "details": {}}}
        response = jsonify(body)
        # Keep what the exception says beyond its body: Allow on a 405, for one.
        for key, value in error.get_headers():
            if key.lower() != "content-type":
                response.headers[key] = value
        return response, error.code

    @app.errorhandler(Exception)
    def unexpected(error):
        # The user sees one line; the server log keeps the traceback for us.
        LOG.error("unexpected error on %s %s\n%s", request.method, request.path,
                  traceback.format_exc())
        body = {"error": {"code": "internal", "message": f"internal error: {error}",
                          "details": {}}}
        return jsonify(body), 500

    return app


def _methods_serving(app, path):
    """The methods whose route serves ``path`` with every path value fitting its declaration,
    and those whose route serves it with only a name that does not fit (its enums fit)."""
    adapter = app.url_map.bind("localhost")
    fully, loosely = [], []
    for method in ("GET", "POST", "PUT", "DELETE"):
        try:
            endpoint, values = adapter.match(path, method=method)
        except HTTPException:
            continue
        misfit = params.path_misfit(app.view_functions[endpoint], values)
        if misfit is None:
            fully.append(method)
        if misfit != "route":
            loosely.append(method)
    return fully, loosely
