# Answers as app.psgi does (pid=PID gen=GEN). GET /slow?FILE creates FILE (so a test knows the
# request is being served), then takes 5 seconds to answer: a reload that is not graceful
# cuts it off.
sub {
    my $env = shift;
    if ($env->{PATH_INFO} eq '/slow') {
        open my $begun, '>', $env->{QUERY_STRING} or die "cannot create $env->{QUERY_STRING}: $!";
        close $begun;
        sleep 5;
    }
    [200, ['Content-Type' => 'text/plain'], ["pid=$$ gen=$ENV{SERVER_STARTER_GENERATION}\n"]];
}
