"""Bodies a route declares: ``@takes`` for what it reads, ``@returns`` for what it answers. The
server checks a request body with its declaration before the view uses it (``api.common.
json_body``), and the OpenAPI document publishes the same declarations.

A body may depend on a path parameter (``POST /<plural>``: a provider or a service): ``by`` names
the parameter and maps each of its values to a schema; the document then lists one path per value.
"""

import dataclasses


@dataclasses.dataclass
class Body:
    schema: object = None            # a contract.schema.Schema
    by: str = None                   # path parameter that picks the schema from ``schemas``
    schemas: dict = None
    required: bool = True
    media: str = "application/json"
    checked_by_view: bool = False    # the view checks with these same objects (the catalog)
    published: object = None         # the document shows this instead: the outer shape is
    #                                  checked here, the inner one by the view (the catalog)

    def schema_for(self, values):
        if self.by is None:
            return self.schema
        return (self.schemas or {}).get((values or {}).get(self.by))


def takes(schema=None, **options):
    def mark(view):
        view.contract_body = Body(schema, **options)
        return view
    return mark


def body_of(view):
    return getattr(view, "contract_body", None)


@dataclasses.dataclass
class Response:
    status: int
    schema: object = None   # a Schema, or a dict of JSON Schema for what is not checked
    description: str = "success"
    links: dict = None      # OpenAPI links: name -> {"operationId", "parameters"}
    media: str = "application/json"


def returns(status, schema=None, description="success", links=None, media="application/json"):
    def mark(view):
        view.contract_responses = [Response(status, schema, description, links, media),
                                   *getattr(view, "contract_responses", [])]
        return view
    return mark


def responses_of(view):
    return getattr(view, "contract_responses", None) or [Response(200)]
