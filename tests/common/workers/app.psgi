sub { [200, ['Content-Type' => 'text/plain'], ["pid=$$ gen=$ENV{SERVER_STARTER_GENERATION}\n"]] }
