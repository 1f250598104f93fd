package ServerStarterAdapter;

# Runs Server::Starter's own test suite against another start_server binary.
#
# Loaded with `perl -MServerStarterAdapter` before a test file, it loads the real Server::Starter
# and replaces its in-process start_server, restart_server and stop_server with runs of the
# binary named by $START_SERVER_UNDER_TEST. start_server execs the binary in place of the call,
# so the pid the test holds (the one it sends HUP and TERM to) stays the supervisor's pid.
# Everything else (server_ports, the internal functions) stays the original's.

use strict;
use warnings;

use Server::Starter ();

my $BIN_VAR = 'START_SERVER_UNDER_TEST';
# Optional: a file that gets one line per start_server run, so that a suite passing without
# ever running the binary under test can be told apart.
my $LOG_VAR = 'START_SERVER_ADAPTER_LOG';

sub binary {
    my $bin = $ENV{$BIN_VAR};
    die "ServerStarterAdapter: set $BIN_VAR to the start_server binary to test\n"
        unless defined $bin && length $bin;
    return $bin;
}

sub options {
    return { @_ == 1 ? %{ $_[0] } : @_ };
}

sub list {
    my $value = shift;
    return () unless defined $value;
    return ref $value ? @$value : ($value);
}

# The command-line arguments meaning what the options hash means to the original.
sub start_args {
    my $opts = shift;
    my @args;
    push @args, "--port=$_" for list($opts->{port});
    push @args, "--path=$_" for list($opts->{path});
    for my $name (qw(dir interval pid_file status_file envdir
                     auto_restart_interval kill_old_delay)) {
        push @args, '--' . dashed($name) . "=$opts->{$name}"
            if defined $opts->{$name};
    }
    # The original falls back to its defaults for false values of these.
    for my $name (qw(signal_on_hup signal_on_term backlog log_file)) {
        push @args, '--' . dashed($name) . "=$opts->{$name}"
            if $opts->{$name};
    }
    if ($opts->{daemonize}) {
        push @args, '--daemonize';
        # Only the command line insists on a log file; in-process, output stays where it was.
        push @args, '--log-file=/dev/stderr'
            unless $opts->{log_file};
    }
    if ($opts->{enable_auto_restart}) {
        push @args, '--enable-auto-restart';
    } elsif (defined $opts->{enable_auto_restart}) {
        # The original sets the variable, false value included, overriding the environment.
        $ENV{ENABLE_AUTO_RESTART} = $opts->{enable_auto_restart};
    }
    die "mandatory option ``exec'' is missing or is not an arrayref\n"
        unless ref $opts->{exec} eq 'ARRAY' && @{ $opts->{exec} };
    return (@args, '--', @{ $opts->{exec} });
}

sub dashed {
    (my $name = shift) =~ tr/_/-/;
    return $name;
}

sub start_server {
    my $opts = options(@_);
    my $bin = binary();
    my @args = start_args($opts);
    note_run($bin, @args);
    delete @ENV{$BIN_VAR, $LOG_VAR};
    exec { $bin } $bin, @args;
    die "ServerStarterAdapter: cannot run $bin: $!\n";
}

sub note_run {
    my $log = $ENV{$LOG_VAR};
    return unless defined $log;
    open my $fh, '>>', $log
        or die "ServerStarterAdapter: cannot append to $log: $!\n";
    print $fh join(' ', @_), "\n";
    close $fh;
}

sub run_or_die {
    my ($what, @args) = @_;
    my $bin = binary();
    system { $bin } $bin, @args;
    die "$what: $bin @args failed: status $?\n"
        if $? != 0;
}

sub restart_server {
    my $opts = options(@_);
    my @args = map { '--' . dashed($_) . "=$opts->{$_}" }
        grep { defined $opts->{$_} } qw(pid_file status_file);
    run_or_die('restart_server', '--restart', @args);
}

sub stop_server {
    my $opts = options(@_);
    run_or_die('stop_server', '--stop',
        defined $opts->{pid_file} ? ("--pid-file=$opts->{pid_file}") : ());
}

{
    no warnings 'redefine';
    *Server::Starter::start_server   = \&start_server;
    *Server::Starter::restart_server = \&restart_server;
    *Server::Starter::stop_server    = \&stop_server;
}

1;
