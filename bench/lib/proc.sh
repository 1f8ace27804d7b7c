# shellcheck shell=bash
# CPU time from /proc, in clock ticks (getconf CLK_TCK), for the benchmark
# scripts' "CPU per operation" and "CPU taken by other processes" figures.
# Source it; no processes are started (bash builtins only, no forks).
#
#   proc_machine_ticks        busy ticks of the whole machine since boot
#                             (user nice system irq softirq steal of /proc/stat)
#   proc_tree_ticks PID...    utime+stime+cutime+cstime of each PID and all its
#                             live descendants, summed; 0 for an empty or gone PID.
#                             A descendant that exits is counted once, in its
#                             parent's cutime, so before/after differences hold.
#   proc_self_children_ticks  cutime+cstime of this shell ($$): every child it
#                             has waited for (the load generator, helpers)

proc_machine_ticks() {
    local user nice system irq softirq steal
    read -r _ user nice system _ _ irq softirq steal _ < /proc/stat
    echo "$((user + nice + system + irq + softirq + steal))"
}

proc__fields() { # proc__fields PID: prints the fields of /proc/PID/stat from 3 (state) on
    local line
    read -r line 2>/dev/null < "/proc/$1/stat" || return 1
    echo "${line##*) }"
}

proc_self_children_ticks() {
    local f
    f="$(proc__fields $$)" || { echo 0; return; }
    # shellcheck disable=SC2086 # word splitting of the numeric fields is the point
    set -- $f
    echo $((${14} + ${15}))
}

proc_tree_ticks() {
    local -A parent=() ticks=() seen=()
    local roots=("$@") f line pid rest total=0 queue=() next i n
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null < "$f" || continue
        pid="${line%% *}"
        rest="${line##*) }"
        # shellcheck disable=SC2086
        set -- $rest   # field N of stat is $((N-2)) here: ppid 4, utime 14 .. cstime 17
        parent[$pid]="$2"
        ticks[$pid]=$((${12} + ${13} + ${14} + ${15}))
    done
    for pid in "${roots[@]}"; do
        [ -n "$pid" ] && [ -n "${ticks[$pid]:-}" ] && [ -z "${seen[$pid]:-}" ] && { queue+=("$pid"); seen[$pid]=1; }
    done
    # Breadth first over the children; bounded by the number of processes read.
    i=0
    n=${#ticks[@]}
    while [ "$i" -lt "${#queue[@]}" ] && [ "$i" -le "$n" ]; do
        pid="${queue[$i]}"
        total=$((total + ${ticks[$pid]}))
        for next in "${!parent[@]}"; do
            [ "${parent[$next]}" = "$pid" ] && [ -z "${seen[$next]:-}" ] && { queue+=("$next"); seen[$next]=1; }
        done
        i=$((i + 1))
    done
    echo "$total"
}
