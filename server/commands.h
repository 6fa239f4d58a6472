/*
 * commands.h — the copse CLI's subcommands. Each takes the arguments after
 * its name (argv[0] is the subcommand) and returns the process exit status.
 */
#ifndef COPSE_SERVER_COMMANDS_H
#define COPSE_SERVER_COMMANDS_H

int copse__cmd_info(int argc, char **argv);
int copse__cmd_tokenize(int argc, char **argv);
int copse__cmd_detokenize(int argc, char **argv);
int copse__cmd_run(int argc, char **argv);
int copse__cmd_bench(int argc, char **argv);
int copse__cmd_bench_spec(int argc, char **argv); /* `bench spec`, dispatched by copse__cmd_bench */
int copse__cmd_random_model(int argc, char **argv);
int copse__cmd_serve(int argc, char **argv);
int copse__cmd_slice(int argc, char **argv);

#endif
