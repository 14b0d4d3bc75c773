"""Celery's Redis result backend, at one round trip a result.

Celery's own stores a result with a GET (to keep a SUCCESS from being overwritten by a lost
worker's late duplicate) and then SET and PUBLISH inside MULTI/EXEC: three round trips and a
transaction for every call, most of a no-op call's cost on a worker. Here one server-side
script does the same in one: the first final outcome of a call is stored (SET NX, so a
duplicate delivered after a worker died cannot replace it) and published to the server.
Keys, channels and the stored JSON are Celery's own, so the server reads them as before.
"""

from celery.backends.redis import RedisBackend

# KEYS[1] the result key; ARGV[1] the encoded meta, ARGV[2] seconds it is kept.
FIRST_OUTCOME = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
    redis.call('PUBLISH', KEYS[1], ARGV[1])
    return 1
end
return 0
"""


class Results(RedisBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._first_outcome = None

    # The server never waits on an AsyncResult: one pattern subscription hears every result
    # (client.py). Celery's per-result bookkeeping would subscribe to each call's channel when
    # it is sent (messages nobody reads pile up until Redis drops the connection) and cancel
    # it when the AsyncResult is collected: work on every call, for nothing.
    def on_task_call(self, producer, task_id):
        pass

    def remove_pending_result(self, result):
        return result

    def _store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)
        meta["task_id"] = task_id.decode() if isinstance(task_id, bytes) else task_id
        self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        return result

    def _set(self, key, value, expires=None):
        self._script()(keys=[key], args=[value, int(expires or self.expires)])

    def store_outcomes(self, outcomes):
        """Store ``[(call id, outcome)]`` as SUCCESS results, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for call_id, outcome in outcomes:
            meta = self._get_result_meta(result=outcome, state="SUCCESS", traceback=None,
                                         request=None)
            meta["task_id"] = call_id
            # EVAL, not EVALSHA: a pipeline of scripts asks Redis first whether it has them,
            # one more round trip; Redis keeps the compiled script by its body's digest.
            pipe.eval(FIRST_OUTCOME, 1, self.get_key_for_task(call_id), self.encode(meta),
                      int(self.expires))
        pipe.execute()

    def _script(self):
        if self._first_outcome is None:
            self._first_outcome = self.client.register_script(FIRST_OUTCOME)
        return self._first_outcome
