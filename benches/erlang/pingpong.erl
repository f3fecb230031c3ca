%% Erlang distribution doing the work of benches/cluster.rs's
%% `remote_send` and `remote_ask_roundtrip` groups, between two nodes on
%% loopback. Driven by benches/erlang/run.sh (which starts both nodes);
%% not part of CI.
%%
%% Node B only has this module on its code path. Node A runs
%%
%%     pingpong:main([NodeB, Bursts, Rounds])     (strings, as from -run)
%%
%% which spawns the sink on node B, then measures, from one process on A:
%%
%%   burst       1,000 messages, each a 100-byte binary, sent to the sink,
%%               timed until A gets the sink's reply to the 1,000th (the
%%               sink counts what it receives and answers every 1,000th).
%%   round trip  {ping, From, 7} to the sink, which answers {pong, 7};
%%               the next ping when the pong comes.
%%
%% Each is warmed up for ?WARM_MS first, then run Bursts (Rounds) times in
%% ?SAMPLES equal samples. It prints, on stdout, lines the script reads:
%%
%%     otp 25.2.3
%%     schedulers 1 1
%%     burst_ns <mean> <fastest sample> <slowest sample> <bursts>
%%     rtt_ns <mean> <fastest sample> <slowest sample> <round trips>
%%
%% (times in ns per burst or per round trip), then halts: 0 if all went
%% well, 1 (with the reason on stderr) if not. Nothing waits forever: a
%% reply that does not come within ?PATIENCE ms ends the run.
-module(pingpong).
-export([main/1, sink/0]).

-define(BURST, 1000).
-define(SIZE, 100).
-define(SAMPLES, 10).
-define(WARM_MS, 2000).
-define(PATIENCE, 10000).

main([B, Bursts, Rounds]) ->
    try
        run(list_to_atom(B), list_to_integer(Bursts), list_to_integer(Rounds)),
        halt(0)
    catch
        Class:Reason:Stack ->
            io:format(standard_error, "pingpong: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end.

run(B, Bursts, Rounds) ->
    ok = connect(B, 100),
    {module, pingpong} = rpc:call(B, code, ensure_loaded, [pingpong]),
    io:format("otp ~s~n", [otp_version()]),
    io:format("schedulers ~b ~b~n",
              [erlang:system_info(schedulers_online),
               rpc:call(B, erlang, system_info, [schedulers_online])]),
    {Sink, _Mon} = spawn_monitor(B, pingpong, sink, []),
    Sink ! {owner, self()},
    Blob = binary:copy(<<0>>, ?SIZE),

    %% remote_send
    Sent0 = warm(fun(S) -> burst(Sink, Blob, S) end, 0),
    {BurstStats, _} = measure(fun(S) -> burst(Sink, Blob, S) end, Sent0, Bursts),
    io:format("burst_ns ~s~n", [stats(BurstStats)]),

    %% remote_ask_roundtrip
    Rt = fun(S) -> ping(Sink, 7), S end,
    warm(Rt, 0),
    {RttStats, _} = measure(Rt, 0, Rounds),
    io:format("rtt_ns ~s~n", [stats(RttStats)]),
    ok.

connect(B, 0) ->
    error({cannot_reach, B});
connect(B, Tries) ->
    case net_adm:ping(B) of
        pong -> ok;
        pang -> timer:sleep(100), connect(B, Tries - 1)
    end.

otp_version() ->
    Rel = erlang:system_info(otp_release),
    File = filename:join([code:root_dir(), "releases", Rel, "OTP_VERSION"]),
    case file:read_file(File) of
        {ok, V} -> string:trim(binary_to_list(V));
        _ -> Rel
    end.

%% One burst: ?BURST blobs, then the sink's word that it has them all.
%% S is the number the sink has been sent before this burst.
burst(Sink, Blob, S) ->
    send_n(Sink, Blob, ?BURST),
    Want = S + ?BURST,
    receive
        {done, Want} -> Want;
        {'DOWN', _, process, _, Why} -> error({sink_down, Why})
    after ?PATIENCE ->
        error({burst_lost, {sent, Want}})
    end.

send_n(_, _, 0) -> ok;
send_n(Sink, Blob, N) -> Sink ! Blob, send_n(Sink, Blob, N - 1).

ping(Sink, X) ->
    Sink ! {ping, self(), X},
    receive
        {pong, X} -> ok;
        {'DOWN', _, process, _, Why} -> error({sink_down, Why})
    after ?PATIENCE ->
        error(pong_lost)
    end.

%% Runs F (state in, state out) for ?WARM_MS; returns the state.
warm(F, S) ->
    Until = erlang:monotonic_time(millisecond) + ?WARM_MS,
    warm(F, S, Until).

warm(F, S, Until) ->
    case erlang:monotonic_time(millisecond) >= Until of
        true -> S;
        false -> warm(F, F(S), Until)
    end.

%% Runs F N times in ?SAMPLES samples; returns {{Mean, Min, Max, N}, S}
%% with the times in ns per run of F.
measure(F, S, N) ->
    Per = max(1, N div ?SAMPLES),
    {Times, S1} = samples(F, S, Per, ?SAMPLES, []),
    Total = lists:sum(Times),
    Count = Per * ?SAMPLES,
    {{Total / Count, lists:min(Times) / Per, lists:max(Times) / Per, Count}, S1}.

samples(_, S, _, 0, Acc) -> {Acc, S};
samples(F, S, Per, K, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    S1 = times(F, S, Per),
    T1 = erlang:monotonic_time(nanosecond),
    samples(F, S1, Per, K - 1, [T1 - T0 | Acc]).

times(_, S, 0) -> S;
times(F, S, N) -> times(F, F(S), N - 1).

stats({Mean, Min, Max, N}) ->
    io_lib:format("~.1f ~.1f ~.1f ~b", [float(Mean), float(Min), float(Max), N]).

%% The receiver, on node B: counts blobs and tells its owner at every
%% ?BURST-th; answers pings.
sink() ->
    receive {owner, Owner} -> sink(Owner, 0) end.

sink(Owner, N) ->
    receive
        Bin when is_binary(Bin) ->
            N1 = N + 1,
            case N1 rem ?BURST of
                0 -> Owner ! {done, N1};
                _ -> ok
            end,
            sink(Owner, N1);
        {ping, From, X} ->
            From ! {pong, X},
            sink(Owner, N)
    end.
