"""``RoutedLlm``: one ADK model that routes each request to one of several."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import MappingProxyType

from google.adk.models._capabilities import LlmCapabilities
from google.adk.models.base_llm import BaseLlm
from google.adk.models.base_llm_connection import BaseLlmConnection
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.models.registry import LLMRegistry
from pydantic import ConfigDict, PrivateAttr
from typing_extensions import override

from routed_llm import observability
from routed_llm.attempt import Attempt, check_hedging
from routed_llm.capabilities import name_prefix
from routed_llm.errors import NoResponse
from routed_llm.health import HealthTracker
from routed_llm.latency import LatencyTracker
from routed_llm.limits import RateLimits
from routed_llm.live import LiveOwners, RoutedConnection, resumption_handle
from routed_llm.observability import FailoverHook, HedgeHook, RouteHook
from routed_llm.routing import Judge, LlmRouter, RoutedCall, RouterSettings, check_callables, check_router
from routed_llm.signatures import SignatureLedger
from routed_llm.timeouts import check_seconds, per_key_seconds

__all__ = ["RoutedLlm"]


class RoutedLlm(BaseLlm):
    """A model that asks a router which of several models serves each request.

    Use it wherever ADK takes a model::

        def router(models, llm_request, error_context):
            if error_context is None:
                return "primary"
            if "fallback" not in error_context.failed_keys:
                return "fallback"
            return None  # Out of options: the last error propagates.

        one_attempt = types.HttpRetryOptions(attempts=1)  # no SDK retries: fail over at once
        agent = LlmAgent(
            name="assistant",
            model=RoutedLlm(
                models={
                    "primary": Gemini(model="gemini-2.5-flash", retry_options=one_attempt),
                    "fallback": Gemini(model="gemini-2.5-pro", retry_options=one_attempt),
                },
                router=router,
            ),
        )

    Each call asks the router for a key and delegates to that model, streaming
    its responses through as they arrive. If the model fails before yielding
    anything, the router is asked again with an
    :class:`~routed_llm.ErrorContext` and may pick another key; each key runs
    at most once per call. Once a model has yielded a response the call
    belongs to it and a later error propagates. Between attempts the request
    is rolled back to the state the caller passed in, and every response
    records in ``custom_metadata["routed_llm"]`` which key served it.

    Args:
        models: The models to route between: a mapping of key to a ``BaseLlm``
            or a model name that ADK's ``LLMRegistry`` resolves, or a sequence
            of those keyed by each model's name.
        router: Picks the key for each request; see
            :data:`~routed_llm.LlmRouter`. Sync or async.
        model: A display name. Defaults to ``RoutedLlm[key=model, ...]``, or
            ``gemini-routed[key=model, ...]`` when any key is a Gemini model
            (``gemini-3-routed[...]`` when every Gemini key is Gemini 3 or
            later). ADK puts it on the request before the call, where its
            Gemini built-in tools (``google_search``, ``url_context``,
            ``BuiltInCodeExecutor``) check for a Gemini model name: a name of
            your own must begin ``gemini-`` for them (``gemini-3-`` beside
            sub-agents). The delegate's own name replaces it for each
            attempt.
        on_route: Called, sync or async, with a
            :class:`~routed_llm.RouteEvent` before every attempt.
        on_failover: Called, sync or async, with a
            :class:`~routed_llm.FailoverEvent` after every attempt that fails
            before output. A hook that raises is logged and ignored.
        clock: Seconds from a monotonic clock, for the events' ``elapsed``.
        first_response_timeout: Seconds a model has to give its first
            response (or to open a live connection): one number for every
            key, or ``{key: seconds}`` (keys left out have no limit). When it
            expires the attempt is cancelled and the router gets an
            :class:`~routed_llm.AttemptTimeout`, so every strategy fails over.
        idle_timeout: Once a model began answering, the longest wait between
            two of its responses. When it expires the stream is closed and
            :class:`~routed_llm.StreamStalled` is raised; no failover.
        deadline: The whole call's budget for its first output, every attempt
            together; each attempt's wait, and holding and judging a judged
            answer, are capped by what remains. When it runs out,
            :class:`~routed_llm.DeadlineExceeded` is raised (or an answer
            rejected earlier is output) and the router is not asked again.
        health: A :class:`~routed_llm.HealthTracker` told of every attempt:
            a first response is a success, a transient or provider failure
            counts against the key. Strategies skip keys it says are
            unavailable. One tracker may serve several routed models whose
            keys name the same deployments.
        limits: :class:`~routed_llm.RateLimits`: one request is reserved
            before each attempt on a limited key (a spent budget is a
            :class:`~routed_llm.BudgetExhausted` before output, and the router
            picks again), tokens are counted when the response ends, and
            strategies skip keys whose budget is spent.
        accept: Judges of the answers: one :data:`~routed_llm.routing.Judge`
            for every key, or ``{key: judge}`` (keys left out are not
            judged). A judged key's answer is held back to its end, then
            judged: accepted, it is output in order; rejected, the router
            gets a :class:`~routed_llm.ResponseRejected`, transient, so every
            strategy fails over. If no other model serves, the rejected
            answer is output after all, marked ``rejected`` (a refusal
            outranks an answer a judge rejected). A rejection is no verdict
            on the key's health. Live connections are not judged.
        latency: A :class:`~routed_llm.LatencyTracker` that records every
            attempt whose first response is an answer (not an error
            response): its time to first response, on the tracker's clock,
            from the model's call. A judged answer is recorded whatever its
            verdict; live connections are not recorded. Strategies such as
            :class:`~routed_llm.strategies.FastestFirst` route on it.
        hedge_after: Hedged requests (not for live connections): when an
            attempt has given no first response this long after its start,
            the router is asked again with a :class:`~routed_llm.HedgeDelay`
            as ``last_error`` and the key it picks runs beside the slow
            attempt; the first to answer (a judged key: with its accepted
            answer) wins and the others are cancelled. Seconds for every
            key, ``{key: seconds}`` (keys left out are not hedged), or
            ``"p90"``, ``"p95"`` or ``"p99"``: the key's own recent quantile
            in ``latency`` (no hedge before it has ``min_samples``). None,
            the default, never hedges. A hedged request may be billed twice.
        max_hedges: The most attempts started by hedging in flight at once
            (so at most ``1 + max_hedges`` attempts run); a whole number of
            at least 1. Without ``hedge_after`` it has no effect.
        on_hedge: Called, sync or async, with a
            :class:`~routed_llm.HedgeEvent` each time the router is asked
            for a hedge.

    Raises:
        ValueError: If ``models`` is empty, names a model twice, or has a
            model name ADK cannot resolve, if ``router`` declares keys that
            are not in ``models``, or a time limit is not a positive number
            (or names a key that is not routed), or ``accept`` names a key
            that is not routed, or ``hedge_after`` is not positive seconds,
            names a key that is not routed, or is a quantile name without
            ``latency``, or ``max_hedges`` is below 1.
        TypeError: If an entry is neither a ``BaseLlm`` nor a string, a key is
            not a non-empty string, or ``router``, a hook or a judge is not
            callable, or ``latency`` is not a ``LatencyTracker``, or
            ``hedge_after`` or ``max_hedges`` has the wrong type.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _settings: RouterSettings = PrivateAttr()
    _live_owners: LiveOwners = PrivateAttr(default_factory=LiveOwners)
    _signatures: SignatureLedger = PrivateAttr(default_factory=SignatureLedger)

    def __init__(
        self,
        *,
        models: Mapping[str, BaseLlm | str] | Sequence[BaseLlm | str],
        router: LlmRouter,
        model: str | None = None,
        on_route: RouteHook | None = None,
        on_failover: FailoverHook | None = None,
        clock: Callable[[], float] = time.perf_counter,
        first_response_timeout: float | Mapping[str, float] | None = None,
        idle_timeout: float | None = None,
        deadline: float | None = None,
        health: HealthTracker | None = None,
        limits: RateLimits | None = None,
        accept: Judge | Mapping[str, Judge] | None = None,
        latency: LatencyTracker | None = None,
        hedge_after: float | Mapping[str, float] | str | None = None,
        max_hedges: int = 1,
        on_hedge: HedgeHook | None = None,
    ) -> None:
        resolved = _resolve_models(models)
        check_router(
            router, resolved, owner="RoutedLlm", signature="router(models, llm_request, error_context)"
        )
        if health is not None and not isinstance(health, HealthTracker):
            raise TypeError(f"RoutedLlm(health=...) takes a HealthTracker; got {type(health).__name__}.")
        if limits is not None and not isinstance(limits, RateLimits):
            raise TypeError(f"RoutedLlm(limits=...) takes RateLimits; got {type(limits).__name__}.")
        _check_shared_keys(resolved, health, limits)
        if latency is not None and not isinstance(latency, LatencyTracker):
            raise TypeError(f"RoutedLlm(latency=...) takes a LatencyTracker; got {type(latency).__name__}.")
        if latency is not None and latency.store is not None:
            for key in resolved:
                latency.store.check_key(key)
        if model is not None and not isinstance(model, str):
            raise TypeError(f"RoutedLlm(model=...) is a display name string, got {type(model).__name__}.")
        check_callables(
            "RoutedLlm", on_route=on_route, on_failover=on_failover, on_hedge=on_hedge, clock=clock
        )
        hedging = check_hedging(hedge_after, max_hedges, resolved, latency)
        super().__init__(model=model or _default_name(resolved))
        self._settings = RouterSettings(
            models=MappingProxyType(resolved),
            router=router,
            on_route=on_route,
            on_failover=on_failover,
            clock=clock,
            first_response_timeout=per_key_seconds(
                "RoutedLlm", "first_response_timeout", first_response_timeout, resolved
            ),
            idle_timeout=check_seconds("RoutedLlm", "idle_timeout", idle_timeout),
            deadline=check_seconds("RoutedLlm", "deadline", deadline),
            health=health,
            limits=limits,
            accept=_judges(accept, resolved),
            latency=latency,
            hedging=hedging,
            on_hedge=on_hedge,
        )

    @property
    def models(self) -> Mapping[str, BaseLlm]:
        """The routed models by key (read-only)."""
        return self._settings.models

    @property
    def router(self) -> LlmRouter:
        """The router that picks a key for each request."""
        return self._settings.router

    @property
    @override
    def capabilities(self) -> LlmCapabilities:
        """What every routed model supports.

        Any of the models may end up serving a request, and ADK builds the
        request before knowing which, so a capability is reported only when
        all of them have it.
        """
        reports = [llm.capabilities for llm in self._settings.models.values()]
        return LlmCapabilities(
            **{
                name: all(getattr(report, name) for report in reports)
                for name, info in LlmCapabilities.model_fields.items()
                if info.annotation is bool
            }
        )

    @override
    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        """Generates one turn with the model the router picks.

        Args:
            llm_request: The request. Each attempt sees ``model`` set to its
                delegate's name and the rest as the caller passed it in.
            stream: Passed through to the delegate.

        Yields:
            The delegate's responses as they arrive, each a copy with
            ``custom_metadata["routed_llm"]`` naming the serving key (the
            delegate's own objects are never changed). A judged key's answer
            and an error response are held back to their end first.

        Raises:
            RoutingError: If the router picks no key or an unknown one.
            DeadlineExceeded: If the deadline ran out before any output,
                holding and judging included, and no answer was rejected.
            NoResponse: If the last model tried answered nothing and no
                answer was rejected.
            asyncio.CancelledError: If the call is cancelled (a model that
                reports the cancellation as another error is not failed over).
            Exception: The last model error, unchanged, when the router stops
                failing over and no answer was rejected (a rejected answer is
                output instead); any error after a response was yielded;
                whatever a judge raised.
        """
        call = self._new_call(llm_request)
        if call.hedging is not None:
            async for hedged in self._hedged(call, llm_request, stream):
                yield hedged
            return
        try:
            key = await call.first_key()
            while True:
                model = self._addressed(call, key, llm_request)
                responses: AsyncGenerator[LlmResponse, None] | None = None
                try:
                    try:
                        responses = call.metered(key, model.generate_content_async(llm_request, stream))
                        response = await call.first_response(key, responses)
                        if response is None:
                            raise NoResponse(key)
                        held = None
                        if call.holding:  # A judged answer or an error response.
                            held = await call.held_output(key, response, responses)
                    except Exception as error:
                        if error is call.judge_error:
                            raise
                        if responses is not None:
                            # Releases what the failed attempt holds before the
                            # router is asked again, or a rejected answer is output.
                            await responses.aclose()
                        if error is not call.deadline_error:
                            try:
                                key = await call.fail_over(key, error)
                                continue
                            except Exception as final:
                                error = final
                        rejected = call.rejected_output(error)
                        if rejected is None:
                            raise error
                        for response in rejected:
                            (self.__pydantic_private__ or {})["_signatures"].record_stamped(response)
                            yield response
                        return
                    route = call.route_metadata(key)
                    observability.record_served(route)
                    stamp = call.stamp
                    issued = (self.__pydantic_private__ or {})["_signatures"].record
                    if held is not None:
                        for response in held:
                            issued(key, response)
                            yield stamp(response, route)
                        return
                    issued(key, response)
                    yield stamp(response, route)
                    if call.idle_timeout is None:  # The common case, without a timer per chunk.
                        async for response in responses:
                            issued(key, response)
                            yield stamp(response, route)
                        return
                    while (response := await call.next_response(key, responses)) is not None:
                        issued(key, response)
                        yield stamp(response, route)
                    return
                finally:
                    if responses is not None:
                        # Closes the delegate's stream when the caller stops
                        # early, rather than leaving a provider connection to
                        # the garbage collector.
                        await responses.aclose()
        finally:
            call.release()

    async def _hedged(
        self, call: RoutedCall, llm_request: LlmRequest, stream: bool
    ) -> AsyncGenerator[LlmResponse, None]:
        """:meth:`generate_content_async` with hedging: the call's attempts race (``RoutedCall.race``)."""
        private = self.__pydantic_private__ or {}
        ledger: SignatureLedger = private["_signatures"]
        models = private["_settings"].models

        def open_stream(key: str, request: LlmRequest) -> AsyncGenerator[LlmResponse, None]:
            model = call.delegate(key, request)
            ledger.address(request, key, models)
            return model.generate_content_async(request, stream)

        winner: Attempt | None = None
        try:
            try:
                winner = await call.race(open_stream)
            except Exception as error:
                rejected = call.rejected_output(error)
                if rejected is None:
                    raise
                for response in rejected:
                    ledger.record_stamped(response)
                    yield response
                return
            key, responses = winner.key, winner.responses
            assert winner.first is not None
            assert responses is not None
            route = call.route_metadata(key)
            observability.record_served(route)
            stamp = call.stamp
            for answer in winner.held or (winner.first,):
                ledger.record(key, answer)
                yield stamp(answer, route)
            if winner.held is not None:
                return
            while (chunk := await call.next_response(key, responses)) is not None:
                ledger.record(key, chunk)
                yield stamp(chunk, route)
        finally:
            try:
                if winner is not None:
                    await winner.close()
            finally:
                call.release()

    @override
    @asynccontextmanager
    async def connect(self, llm_request: LlmRequest) -> AsyncIterator[BaseLlmConnection]:
        """Opens a live connection with the model the router picks.

        A model that fails to connect sends the router round again, as in
        :meth:`generate_content_async`. Once a connection is open it stays
        with its model: errors inside the ``async with`` body propagate.

        A resumed session (``live_connect_config.session_resumption.handle``
        set) goes back to the model that opened it, without asking the router
        and without failing over: the key remembered for this request object
        (weakly), else the one key whose model ``llm_request.model`` names. A
        request that names this RoutedLlm itself (a fresh run carrying a
        handle) goes to the router's first pick, again without failover.

        Raises:
            ValueError: If a resumed session's owner cannot be identified.

        Args:
            llm_request: The request to open the connection with.

        Yields:
            The open connection of the chosen model, wrapped so that every
            response it receives carries ``custom_metadata["routed_llm"]``.
        """
        resuming = resumption_handle(llm_request) is not None
        owner = self._live_owners.owner(llm_request, self.models, self.model) if resuming else None
        call = self._new_call(llm_request)
        async with AsyncExitStack() as stack:
            try:
                key = await (call.pinned_key(owner) if owner is not None else call.first_key())
                while True:
                    model = self._addressed(call, key, llm_request)
                    try:
                        connection = await call.open_connection(key, stack, model.connect(llm_request))
                        break
                    except Exception as error:
                        if error is call.deadline_error:
                            raise
                        if resuming:
                            call.raise_if_cancelled(error)
                            raise  # The handle means nothing to another model.
                        key = await call.fail_over(key, error)
                self._live_owners.remember(llm_request, key)
                route = call.route_metadata(key)
                observability.record_served(route)
            finally:
                call.release()
            yield RoutedConnection(connection, route)

    def _addressed(self, call: RoutedCall, key: str, llm_request: LlmRequest) -> BaseLlm:
        """The model under ``key``, with ``llm_request`` made valid for it for this attempt.

        Raises:
            RoutingError: If the model cannot serve the request; nothing is sent.
        """
        model = call.delegate(key)
        private = self.__pydantic_private__ or {}
        private["_signatures"].address(llm_request, key, private["_settings"].models)
        return model

    def _new_call(self, llm_request: LlmRequest) -> RoutedCall:
        """Starts the routing state of one call.

        Reads the private attribute straight from pydantic's store: going
        through ``self._settings`` takes pydantic's ``__getattr__`` fallback,
        which costs more than the rest of a call's routing bookkeeping.
        """
        private = self.__pydantic_private__ or {}
        return RoutedCall(private["_settings"], llm_request)


def _default_name(models: Mapping[str, BaseLlm]) -> str:
    """``{name_prefix(models)}[key=model, ...]``: see :func:`~routed_llm.capabilities.name_prefix`."""
    display = ", ".join(f"{key}={llm.model}" for key, llm in models.items())
    return f"{name_prefix(models.values())}[{display}]"


def _check_shared_keys(
    models: Mapping[str, BaseLlm], health: HealthTracker | None, limits: RateLimits | None
) -> None:
    """Rejects limits on keys that are not routed, and keys a shared store cannot record."""
    if limits is not None:
        unknown = sorted(limits.limits.keys() - models.keys())
        if unknown:
            raise ValueError(
                f"RoutedLlm(limits=...) limits the keys {unknown}, which are not in models "
                f"({', '.join(repr(key) for key in models)}). Use the routed keys."
            )
    stores = {id(tracker.store): tracker.store for tracker in (health, limits) if tracker is not None}
    for store in stores.values():
        if store is not None:
            for key in models:
                store.check_key(key)


def _resolve_models(
    models: Mapping[str, BaseLlm | str] | Sequence[BaseLlm | str],
) -> dict[str, BaseLlm]:
    """Checks ``models`` and turns it into a dict of key to model instance."""
    if isinstance(models, (str, bytes)) or not isinstance(models, (Mapping, Sequence)):
        raise TypeError(
            "RoutedLlm(models=...) takes a mapping of key to model, or a sequence of models; "
            f"got {type(models).__name__}."
        )
    entries: list[tuple[object, object]]
    if isinstance(models, Mapping):
        entries = list(models.items())
    else:
        for index, item in enumerate(models):
            if not isinstance(item, (BaseLlm, str)):
                raise TypeError(
                    f"RoutedLlm(models=[...])[{index}] is a {type(item).__name__}; "
                    "each entry is a BaseLlm instance or a model name string."
                )
        entries = [(item if isinstance(item, str) else item.model, item) for item in models]
        names = [name for name, _ in entries]
        twice = next((name for index, name in enumerate(names) if name in names[:index]), None)
        if twice is not None:
            raise ValueError(
                f"RoutedLlm(models=[...]) names the model {twice!r} twice, and a sequence is "
                "keyed by model name. Pass a mapping with a distinct key for each entry."
            )
    if not entries:
        raise ValueError("RoutedLlm(models=...) is empty; give it at least one model to route to.")
    resolved: dict[str, BaseLlm] = {}
    for key, entry in entries:
        if not isinstance(key, str) or not key:
            raise TypeError(f"RoutedLlm(models=...) keys are non-empty strings; got {key!r}.")
        if isinstance(entry, BaseLlm):
            resolved[key] = entry
        elif isinstance(entry, str):
            try:
                resolved[key] = LLMRegistry.new_llm(entry)
            except ValueError as error:
                raise ValueError(
                    f"RoutedLlm(models=...): ADK's LLMRegistry cannot resolve the model name "
                    f"{entry!r} for key {key!r}. Pass a BaseLlm instance instead, or register "
                    "its class with LLMRegistry.register."
                ) from error
        else:
            raise TypeError(
                f"RoutedLlm(models=...): the entry for {key!r} is a {type(entry).__name__}; "
                "each entry is a BaseLlm instance or a model name string."
            )
    return resolved


def _judges(accept: object, models: Mapping[str, BaseLlm]) -> Mapping[str, Judge]:
    """Checks ``accept`` and turns it into a read-only mapping of key to judge."""
    if accept is None:
        return MappingProxyType({})
    if not isinstance(accept, Mapping):
        if not callable(accept):
            raise TypeError(
                "RoutedLlm(accept=...) takes a judge, judge(key, response) -> bool | str, or a "
                f"mapping of key to judge; got {type(accept).__name__}."
            )
        return MappingProxyType(dict.fromkeys(models, accept))
    unknown = sorted(str(key) for key in accept if key not in models)
    if unknown:
        raise ValueError(
            f"RoutedLlm(accept=...) names the keys {unknown}, which are not in models "
            f"({', '.join(repr(key) for key in models)}). Judge routed keys only."
        )
    for key, judge in accept.items():
        if not callable(judge):
            raise TypeError(
                f"RoutedLlm(accept=...): the judge for {key!r} is a {type(judge).__name__}; a judge is "
                "a function judge(key, response) returning True, False or a reason string."
            )
    return MappingProxyType(dict(accept))
