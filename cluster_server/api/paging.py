"""Large answers: keyset pages of a list, and a JSON body streamed in chunks.

A 10,000-node cluster has 40,000 tasks; a page is read with ``WHERE key > after ORDER BY key
LIMIT n`` on a key no write changes (a task's ``seq``, a node's rowid), so concurrent status
updates and inserts never make a row appear twice or be skipped across pages, and each page
costs the same however deep it is (an OFFSET would rescan every earlier row).
"""

import json

from flask import Response, request

from cluster_server.contract.params import INTEGER

MAX_LIMIT = 10_000
# Declared on every route that pages: ?limit=N (1 to 10,000) and ?after=CURSOR (the value a page
# names as "next" in its X-Shoal-Next header or "next" key).
LIMIT = {"type": "string", "pattern": "^([1-9][0-9]{0,3}|10000)$",
         "description": f"rows in a page (1 to {MAX_LIMIT:,}); all rows when absent"}
AFTER = dict(INTEGER, description="the cursor of the previous page's last row ('next')")
PAGE_QUERY = {"limit": LIMIT, "after": AFTER}
NEXT_HEADER = "X-Shoal-Next"
CHUNK = 1000  # rows encoded per write of a streamed body


def page_args():
    """(limit, after) from the query, each None when absent; both fit their declarations
    (checked before the view)."""
    limit, after = request.args.get("limit"), request.args.get("after")
    return (int(limit) if limit else None), (int(after) if after else None)


def keyset(db, select, key, params, limit, after):
    """Rows of ``select`` (which ends in a WHERE clause, and selects ``key`` first) past
    ``after`` in ``key`` order: (rows, next cursor or None). One row more than asked tells
    whether another page exists without counting."""
    sql, args = select, list(params)
    if after is not None:
        sql, args = f"{sql} AND {key} > ?", [*args, after]
    sql += f" ORDER BY {key}"
    if limit is None:
        return db.execute(sql, args).fetchall(), None
    rows = db.execute(sql + " LIMIT ?", [*args, limit + 1]).fetchall()
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1][0]
    return rows, None


def with_next(response, cursor):
    """A list's answer names the next page's cursor in a header (the body stays a plain list)."""
    if cursor is not None:
        response.headers[NEXT_HEADER] = str(cursor)
    return response


def stream_object(head, name, items, encode):
    """A JSON object of ``head``'s keys and then ``name``: the list of ``encode(item)``, sent in
    chunks as it is encoded: the whole text of a 40,000-task plan (9 MB) is never held at once."""
    def body():
        opening = json.dumps(head)
        yield (opening[:-1] + ", " if head else "{") + json.dumps(name) + ": ["
        for start in range(0, len(items), CHUNK):
            chunk = json.dumps([encode(item) for item in items[start:start + CHUNK]])[1:-1]
            yield ("," if start else "") + chunk
        yield "]}\n"
    return Response(body(), mimetype="application/json")
