# Appended to nginx's objs/Makefile by ./configure (auto/make), as njs's
# config.make does for libnjs.a: the rules that build what `config` names
# but nginx does not know how to make. Both always run (byok_force); each
# rewrites its output only when something changed, so an unchanged tree
# neither recompiles nor relinks the module.

cat << END                                                  >> $NGX_MAKEFILE

$BYOK_LIB: byok_force
	\$(MAKE) -s -C $BYOK_ROOT BUILD_DIR=$BYOK_BUILD BYOK_CFLAGS="$BYOK_CFLAGS" lib

$BYOK_CONSOLE_SRC: byok_force
	python3 $BYOK_ROOT/scripts/embed_console.py $BYOK_ROOT/console $BYOK_CONSOLE_SRC

.PHONY: byok_force

END
