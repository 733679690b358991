# bash completion for etrnflush(8). Host names come from "etrnflush list"
# (every configured host and every host something is held for).

_etrnflush_hosts() {
	etrnflush "$@" list --json 2>/dev/null | sed -n 's/^{"host":"\([^"]*\)".*/\1/p'
}

_etrnflush() {
	local cur prev words cword
	_init_completion -s 2>/dev/null || {
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD - 1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	}
	local commands="flush check-config list failed quarantine release delete bounce serve passwd help"
	local global="-c --config -v --verbose --log -h --help --version"
	local flush="--spool --format --to --helo --tls --timeout --dry-run --max-inflight --no-pipelining --no-chunking --max-connections --all --jobs --no-progress"
	local setting="--spool --format --to --helo --tls --timeout --max-inflight --no-pipelining --no-chunking --max-connections"

	case $prev in
	-c | --config | --spool)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	--log)
		COMPREPLY=($(compgen -W "stderr syslog" -- "$cur") $(compgen -f -- "$cur"))
		return
		;;
	--format)
		COMPREPLY=($(compgen -W "auto bsmtp mailstore maildir" -- "$cur"))
		return
		;;
	--tls)
		COMPREPLY=($(compgen -W "none may encrypt verify" -- "$cur"))
		return
		;;
	--to | --helo | --timeout | --max-inflight | --max-connections | --jobs)
		return
		;;
	esac

	# The command word, and the -c given anywhere (for the host names).
	local cmd="" cfg=() i
	for ((i = 1; i < cword; i++)); do
		case ${words[i]} in
		-c | --config) cfg=(-c "${words[i + 1]}") ;;
		--config=*) cfg=(-c "${words[i]#--config=}") ;;
		-*) ;;
		*)
			case " $commands " in
			*" ${words[i]} "*) [ -z "$cmd" ] && cmd=${words[i]} ;;
			esac
			;;
		esac
	done

	local opts
	case $cmd in
	"" | flush) opts="$global $flush" ;;
	check-config) opts="$global $setting" ;;
	list) opts="$global --json" ;;
	failed | quarantine) opts="$global --json" ;;
	serve) opts="$global --tls-on-connect" ;;
	*) opts="$global" ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		return
	fi
	case $cmd in
	"") COMPREPLY=($(compgen -W "$commands $(_etrnflush_hosts "${cfg[@]}")" -- "$cur")) ;;
	help) COMPREPLY=($(compgen -W "$commands" -- "$cur")) ;;
	serve | passwd) ;;
	*) COMPREPLY=($(compgen -W "$(_etrnflush_hosts "${cfg[@]}")" -- "$cur")) ;;
	esac
}
complete -F _etrnflush etrnflush
